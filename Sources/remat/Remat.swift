import ArgumentParser
import Foundation

@main
struct RematCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remat",
        abstract: "Train CNNs on the CPU in little memory.",
        subcommands: [Bench.self, Train.self, Tune.self, Plan.self],
        defaultSubcommand: Bench.self)

    /// Parses as the argument parser does, but an error raised while a subcommand runs is
    /// reported with that subcommand's usage line rather than the root's.
    static func main() {
        var command: ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exit(withError: error)
        }
        do {
            try command.run()
        } catch {
            // the parser's own commands (help) and exit codes are reported as it reports them
            let sub = type(of: command)
            guard !(error is ExitCode),
                  configuration.subcommands.contains(where: { ObjectIdentifier($0) == ObjectIdentifier(sub) }) else {
                exit(withError: error)
            }
            let name = sub._commandName
            FileHandle.standardError.write(Data("""
                Error: \(message(for: error))
                Usage: \(usageString(for: sub))
                  See 'remat \(name) --help' for more information.

                """.utf8))
            exit(withError: ExitCode(exitCode(for: error).rawValue))
        }
    }
}
