import ArgumentParser

@main
struct RematCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remat",
        abstract: "Train CNNs on the CPU in little memory.",
        subcommands: [Bench.self, Train.self, Tune.self, Plan.self],
        defaultSubcommand: Bench.self)
}
