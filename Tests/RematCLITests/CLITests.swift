import Foundation
import Testing
@testable import Remat

/// The built `remat` beside this test bundle (the test target depends on it, so it is built).
let rematBinary: URL = {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("remat")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: "/nonexistent/remat")
}()

struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
    var json: [[String: Any]] {
        stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }
}

/// `remat` (after `launcher`, a command that runs it: a shell with limits, mpirun) in
/// `folder`, with a private tuning file (never the user's), no terminal and no output kept.
func rematProcess(_ args: [String], folder: URL, launcher: [String] = [], environment: [String: String] = [:]) -> Process {
    let p = Process()
    let command = launcher + [rematBinary.path] + args
    p.executableURL = URL(fileURLWithPath: command[0])
    p.arguments = Array(command.dropFirst())
    p.currentDirectoryURL = folder
    var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    env["REMAT_TUNING_FILE"] = folder.appendingPathComponent("tuning.json").path
    p.environment = env
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    return p
}

/// Runs `remat` (see `rematProcess`) to its end, keeping its output.
func remat(_ args: [String], folder: URL, interruptAfter: Double? = nil) throws -> Run {
    let p = rematProcess(args, folder: folder)
    let out = folder.appendingPathComponent("out-\(UUID().uuidString)"), err = folder.appendingPathComponent("err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    try p.run()
    if let t = interruptAfter {
        Thread.sleep(forTimeInterval: t)
        p.interrupt()
    }
    p.waitUntilExit()
    #expect(p.terminationReason == .exit, "remat \(args) died of a signal")
    return Run(status: p.terminationStatus, stdout: try String(contentsOf: out, encoding: .utf8),
               stderr: try String(contentsOf: err, encoding: .utf8))
}

func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("remat-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("remat command end to end")
struct CLITests {
    /// bench: every row in JSON and CSV, predictions beside measurements, a trace file.
    @Test func bench() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let profile = try ChainProfile.measure(try Zoo.resnet(blocksPerStage: 3), batch: 4)
        let none = try CheckpointPlan(policy: .keepAll, profile: profile).predict(profile).peakBytes
        let budget = none * 19 / 20 // loose enough for the overlapped bound too
        let common = ["bench", "--model", "resnet20", "--batch", "4", "--steps", "2", "--warmup", "1",
                      "--policies", "none", "sqrt", "selective", "--budget", String(budget)]
        let json = try remat(common + ["--json", "--trace", "step.json"], folder: folder)
        #expect(json.status == 0, "\(json.stderr)")
        let rows = json.json
        #expect(rows.map { "\($0["policy"]!) \($0["overlap"] as! Bool)" } == [
            "none false", "sqrt(n) false", "sqrt(n) true", "selective false", "budget-\(CheckpointPolicy.mebibytes(budget))MiB false",
            "budget-\(CheckpointPolicy.mebibytes(budget))MiB true"])
        for r in rows {
            let measured = r["peak_activation_mib"] as! Double, predicted = r["predicted_activation_mib"] as! Double
            if r["overlap"] as! Bool { #expect(measured <= predicted * 1.01) } else { #expect(abs(measured - predicted) <= 0.01 * measured) }
            #expect((r["step_seconds_median"] as! Double) > 0 && (r["images_per_second"] as! Double) > 0)
        }
        let trace = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("step.json"))) as? [String: Any]
        #expect((trace?["traceEvents"] as? [Any])?.isEmpty == false)

        // the smallest feasible budget holds overlapped too (its recompute paced under it)
        let smallest = CheckpointPlan.smallestBudget(profile)
        let tight = try remat(["bench", "--model", "resnet20", "--batch", "4", "--steps", "2", "--warmup", "0", "--policies", "none",
                               "--budget", String(smallest), "--json"], folder: folder)
        #expect(tight.status == 0 && tight.json.map { $0["overlap"] as! Bool } == [false, false, true], "\(tight.stdout)\(tight.stderr)")
        for r in tight.json.dropFirst() {
            #expect((r["peak_activation_mib"] as! Double) <= 1.01 * Double(smallest) / 1_048_576, "\(r)")
        }

        // --ideal: each sequential row's one-thread step, and that work spread over the 2 threads
        let ideal = try remat(["bench", "--model", "resnet20", "--batch", "4", "--steps", "2", "--warmup", "0", "--threads", "2",
                               "--policies", "none", "sqrt", "--ideal", "--json"], folder: folder)
        #expect(ideal.status == 0 && ideal.json.count == 3, "\(ideal.stdout)\(ideal.stderr)")
        let base = ideal.json.first?["step_seconds_median"] as? Double ?? 0
        for r in ideal.json {
            let single = r["one_thread_step_seconds"] as? Double, best = r["ideal_overhead_vs_none"] as? Double
            if r["overlap"] as! Bool {
                #expect(single == nil && best == nil, "\(r)") // an overlapped step is not run on one thread
            } else {
                #expect((single ?? 0) > 0, "\(r)")
                #expect(abs((best ?? .nan) - ((single ?? 0) / 2 / base - 1)) < 1e-9, "\(r)")
            }
        }
        let table = try remat(["bench", "--model", "lenet5", "--batch", "4", "--steps", "1", "--warmup", "0", "--threads", "2",
                               "--policies", "none", "selective", "--ideal"], folder: folder)
        #expect(table.status == 0 && table.stdout.contains("ideal (1-thread ms)"), "\(table.stdout)\(table.stderr)")
        // selective cannot overlap: the table says its row ran sequentially
        #expect(table.stdout.contains("selective rebuilds each block on the backward thread"), "\(table.stdout)")

        let csv = try remat(common + ["--csv", "--overlap", "off"], folder: folder)
        let lines = csv.stdout.split(separator: "\n")
        #expect(csv.status == 0 && lines.count == 5, "\(csv.stdout)")
        #expect(lines.first?.hasPrefix("model,batch,threads") == true)
        #expect(Set(lines.map { $0.split(separator: ",", omittingEmptySubsequences: false).count }).count == 1)
    }

    /// plan: JSON predictions that order sensibly; a budget below the smallest names it.
    @Test func plan() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(["plan", "--model", "resnet20", "--batch", "4", "--json"], folder: folder)
        #expect(r.status == 0, "\(r.stderr)")
        let p = try #require(r.json.first)
        let predicted = p["predicted_peak_bytes"] as! Int, none = p["none_peak_bytes"] as! Int, smallest = p["smallest_budget_bytes"] as! Int
        #expect(smallest <= predicted && predicted < none)
        #expect((p["blocks"] as! [Any]).count == 11 && (p["extra_forward_flops"] as! Int) > 0)
        // the extra work is the recomputed blocks' recompute seconds, which each block reports
        let blocks = p["blocks"] as! [[String: Any]], segments = p["segments"] as! [[Int]]
        let again = segments.dropLast().flatMap { $0[0]...$0[1] }.reduce(0.0) { $0 + (blocks[$1]["recompute_seconds"] as! Double) }
        #expect(abs(again - (p["extra_forward_seconds"] as! Double)) <= 1e-12 && blocks.allSatisfy { ($0["recompute_seconds"] as! Double) > 0 })
        let tight = try remat(["plan", "--model", "resnet20", "--batch", "4", "--budget", String(smallest - 1)], folder: folder)
        #expect(tight.status != 0 && tight.stderr.contains("smallest feasible budget is \(smallest) bytes"), "\(tight.stderr)")
        let ok = try remat(["plan", "--model", "resnet20", "--batch", "4", "--budget", String(smallest)], folder: folder)
        #expect(ok.status == 0 && ok.stdout.contains("predicted peak activations"), "\(ok.stderr)")
        // a budget's plan names each block's choice
        let budget = (smallest + none) / 2
        let mid = try #require(try remat(["plan", "--model", "resnet20", "--batch", "4", "--budget", String(budget), "--json"],
                                         folder: folder).json.first)
        let choices = try #require(mid["choices"] as? [String])
        let names: Set = ["keep", "minimal", "selective", "checkpoint", "checkpoint-minimal", "recompute"]
        #expect(choices.count == 11 && choices.last == "keep" && Set(choices).isSubset(of: names), "\(choices)")
        #expect((mid["predicted_peak_bytes"] as! Int) <= budget)
        // selective saves memory where BatchNorm follows a conv, and says so where it cannot
        let warning = "keeps no less than no checkpointing"
        let saves = try remat(["plan", "--model", "resnet20", "--batch", "2", "--policy", "selective", "--estimate"], folder: folder)
        let wastes = try remat(["plan", "--model", "plain-deep-32", "--batch", "2", "--policy", "selective", "--estimate"], folder: folder)
        #expect(saves.status == 0 && !saves.stdout.contains(warning), "\(saves.stdout)\(saves.stderr)")
        #expect(wastes.status == 0 && wastes.stdout.contains(warning), "\(wastes.stdout)\(wastes.stderr)")
        // overlapped (a plan that does not depend on timings): the lookahead's bound, or paced
        // under a limit the larger of it and the sequential peak
        let fixed = ["plan", "--model", "resnet20", "--batch", "4", "--policy", "every-2", "--json"]
        let free = try #require(try remat(fixed + ["--lookahead", "1"], folder: folder).json.first)
        let (sequential, bound) = (free["predicted_peak_bytes"] as! Int, free["overlapped_peak_bound_bytes"] as! Int)
        #expect(bound > sequential)
        for (limit, expected) in [(1, sequential), ((sequential + bound) / 2, (sequential + bound) / 2)] {
            let paced = try remat(fixed + ["--overlap-memory-limit", String(limit)], folder: folder)
            #expect(paced.json.first?["overlapped_peak_bound_bytes"] as? Int == expected, "\(paced.stdout)\(paced.stderr)")
        }
    }

    /// train: metrics lines, an atomic save each epoch, a resume that continues, and
    /// Ctrl-C that saves a state that loads.
    @Test func trainSaveResumeInterrupt() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let args = ["train", "--model", "lenet5", "--batch", "16", "--train-size", "64", "--test-size", "32",
                    "--save", "run.safetensors", "--metrics", "run.jsonl", "--policy", "sqrt"]
        let first = try remat(args + ["--epochs", "1"], folder: folder)
        #expect(first.status == 0 && first.stdout.contains("epoch 1/1:") && first.stdout.contains("test loss"), "\(first.stdout)\(first.stderr)")
        let second = try remat(args + ["--epochs", "2", "--resume", "run.safetensors"], folder: folder)
        #expect(second.status == 0 && second.stdout.contains("resumed") && second.stdout.contains("epoch 2/2:"), "\(second.stdout)\(second.stderr)")
        let lines = try String(contentsOf: folder.appendingPathComponent("run.jsonl"), encoding: .utf8).split(separator: "\n")
        let objects = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == lines.count && objects.filter { $0["type"] as? String == "step" }.count == 8)
        #expect(objects.filter { $0["type"] as? String == "epoch" }.map { $0["epoch"] as? Int } == [1, 2])
        let trainer = Trainer(model: try Zoo.lenet5(), optimizer: SGD())
        #expect(try TrainingState.load(into: trainer, from: folder.appendingPathComponent("run.safetensors").path)["next_epoch"] == "2")

        let long = try remat(["train", "--model", "lenet5", "--batch", "8", "--train-size", "600000", "--save", "int.safetensors"],
                             folder: folder, interruptAfter: 3)
        #expect(long.status == 130 && long.stdout.contains("interrupted: saved"), "\(long.stdout)\(long.stderr)")
        let again = Trainer(model: try Zoo.lenet5(), optimizer: SGD())
        let meta = try TrainingState.load(into: again, from: folder.appendingPathComponent("int.safetensors").path)
        #expect(meta["interrupted"] == "true" && again.step > 0)
    }

    /// tune: a result saved under this CPU, then used by bench (and ignored on request).
    @Test func tuneThenBench() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let t = try remat(["tune", "--model", "lenet5", "--batch", "8", "--steps", "1", "--time-limit", "10", "--json"], folder: folder)
        #expect(t.status == 0, "\(t.stderr)")
        let r = try #require(t.json.first)
        #expect((r["speedup"] as! Double) > 0 && !(r["tried"] as! [Any]).isEmpty)
        // what was kept (the search's fastest only if it beat the default in every re-timed round) is what was saved
        let kept = try #require(r["kept_default"] as? Bool), rounds = try #require(r["rounds"] as? Int)
        #expect(r["saved_to"] is String && (kept ? r["winner"] as? String != r["searched_fastest"] as? String || rounds == 0 : rounds >= 3),
                "\(r)")
        // the search moves the convolution's thresholds too, and the entry keeps the row it chose
        let tried = (r["tried"] as! [[String: Any]]).compactMap { $0["config"] as? String }
        #expect(tried.contains { $0.contains("narrow plane 8") } && tried.contains { $0.contains("im2col width 1024") }, "\(tried)")
        let file = try TuningFile(path: folder.appendingPathComponent("tuning.json").path)
        let entry = try #require(file.matching(model: "lenet5", batch: 8))
        #expect(entry.kernels != nil)
        let bench = ["bench", "--model", "lenet5", "--batch", "8", "--steps", "1", "--warmup", "0", "--policies", "none"]
        #expect(try remat(bench, folder: folder).stdout.contains("using tuning from"))
        #expect(try !remat(bench + ["--no-tuning"], folder: folder).stdout.contains("using tuning"))
        try Data("{not json".utf8).write(to: folder.appendingPathComponent("tuning.json"))
        let broken = try remat(bench, folder: folder)
        #expect(broken.status != 0 && broken.stderr.contains("tuning file"), "\(broken.stderr)")
    }

    /// Nonsense flags and impossible values: a clear error on stderr and a non-zero exit.
    @Test(arguments: [
        ["bench", "--threads", "0"], ["bench", "--batch", "0"], ["bench", "--policies", "bogus"], ["bench", "--budget", "12XB"],
        ["bench", "--json", "--csv"], ["bench", "--lookahead", "0"], ["bench", "--split", "0+1"], ["bench", "--model", "resnet7"],
        ["bench", "--overlap-memory-limit", "lots"], ["bench", "--ideal", "--threads", "1"], ["plan", "--overlap-memory-limit", "0"], ["plan", "--model", "nope"], ["plan", "--budget", "1", "--model", "lenet5", "--batch", "2"], ["tune", "--steps", "0"],
        ["train", "--data", "/nonexistent"], ["train", "--resume", "/nonexistent.safetensors"], ["train", "--batch", "1"],
        ["train", "--model", "lenet5", "--data", "synthetic", "--epochs", "0"], ["frobnicate"],
    ])
    func badInputs(_ args: [String]) throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let r = try remat(args, folder: folder)
        #expect(r.status != 0, "remat \(args) exited 0")
        #expect(r.stderr.contains("Error"), "remat \(args): \(r.stderr)")
    }
}
