import ArgumentParser
import Foundation
import Remat

/// `remat bench`: the CNN training benchmark on synthetic data.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps of a benchmark model on synthetic data, with and without checkpointing.",
        discussion: """
            For each policy (and, where there is recompute to overlap, with overlap off and on) runs warm-up steps, then times --steps training steps (forward, softmax cross-entropy, backward, SGD with momentum 0.9, lr 0.01). The configurations take turns a step at a time, so a shared machine's drift falls on all alike.

            The columns:
              policy      what the forward pass keeps (none, sqrt(n), every-K, selective,
                          minimal, lean, budget-SIZE)
              overlap     on: a second thread rebuilds the next segment during the
                          backward pass
              segs        parts the plan splits the model into: each checkpointed
                          segment, each run of blocks kept, minimal, lean or selective (1:
                          nothing is recomputed)
              step ms     median step time, and half the range of the timed steps
              images/s    batch images per median step
              act. MiB    the highest activation memory of any timed step, counted exactly
                          by Remat's allocator; in brackets the plan's prediction (with
                          overlap, its upper bound)
              peak RSS    the whole process's peak resident memory over one more step of
                          this configuration alone
              vs none     step time against the none row: +20% is a fifth slower
              recompute hidden
                          with overlap: the share of the recompute time that the second
                          thread took off the step, (sequential - overlapped) /
                          (sequential - none); 100% is all of it, below 0 is slower than
                          sequential
              ideal       with --ideal: the overhead against none if the step's one-thread
                          work (its ms in brackets) were spread perfectly over all the
                          threads; no overlap on these cores beats it

            The default, resnet56 at batch 64 with none and sqrt(n) off and on, takes about a minute on 2 cores.

            Examples:
              remat bench                          # resnet56, batch 64, all cores
              remat bench --model vgg11 --policies none sqrt selective --overlap off
              remat bench --budget 80MiB --split 1+1   # add a memory-budget plan
              remat bench --csv > runs.csv         # or --json: an object a row
              remat bench --ideal                  # what a perfect overlap reaches
              remat bench --trace step.json        # trace of an overlapped step
              remat bench --trace s.json --overlap off # ... of a sequential one
            """)

    enum OverlapChoice: String, ExpressibleByArgument, CaseIterable { case off, on, both }

    @OptionGroup var options: ModelOptions
    @OptionGroup var threading: ThreadOptions
    @OptionGroup var memoryOptions: MemoryOptions
    @Option(help: "Timed steps per configuration.") var steps = 6
    @Option(help: "Untimed steps first.") var warmup = 2
    @Option(parsing: .upToNextOption, help: "Policies: none, sqrt, every-K, selective, minimal, lean, budget-SIZE (e.g. budget-80MiB).")
    var policies: [CheckpointPolicy] = [.keepAll, .sqrtN]
    @Option(help: "Also run a memory-budget plan of this size (bytes, or with KiB/MiB/GiB).") var budget: String?
    @Option(help: "Recompute overlapped with backward: off, on or both.") var overlap: OverlapChoice = .both
    @Option(help: "Write the Chrome trace (JSON) of one sqrt(n) step to this file: overlapped, or sequential with --overlap off.") var trace: String?
    @Flag(help: "Also time each sequential step on one thread: the overhead of its work spread evenly over the threads.")
    var ideal = false
    @Flag(help: "Run the trade-off curve that 'remat plan --frontier' predicts: none, minimal, lean, selective, sqrt(n) and budget plans from the smallest feasible to none's peak.")
    var frontier = false
    @Option(help: ArgumentHelp("Draw step time against peak activation memory, measured and predicted, into this SVG file.", valueName: "file.svg"))
    var plot: String?
    @Option(help: ArgumentHelp("With --plot: also draw a peer's points from this file, one JSON object a line with who, label, peak_activation_mib and step_ms (Benchmarks/peers/torch_frontier.py writes PyTorch's).", valueName: "file.jsonl"))
    var peerPoints: String?
    @Flag(help: "One JSON object per row instead of a table.") var json = false
    @Flag(help: "CSV with a header row instead of a table.") var csv = false

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1 (got \(steps)).") }
        guard warmup >= 0 else { throw ValidationError("--warmup cannot be negative (got \(warmup)).") }
        guard !(json && csv) else { throw ValidationError("choose one of --json and --csv.") }
        try validateSize(budget, option: "--budget", example: "80MiB")
        if let trace { try checkWritable(trace, option: "--trace") }
        if let plot { try checkWritable(plot, option: "--plot") }
        if let peerPoints {
            guard plot != nil else { throw ValidationError("--peer-points adds to the plot: give --plot FILE.svg too.") }
            _ = try PeerPoint.load(peerPoints)
        }
        if frontier && memoryOptions.memory != nil { throw ValidationError("--frontier runs every plan along the curve: drop --memory.") }
    }

    struct Row {
        var policy: CheckpointPolicy, overlap: Bool
        var plan: CheckpointPlan
        var median: Double, spread: Double
        var activationBytes: Int, predictedBytes: Int, rssMiB: Double
        /// The plan's predicted extra time as a share of its predicted unchecked step.
        var predictedOverhead = 0.0
        /// With --memory: the whole process's predicted peak.
        var predictedRSS: Int? = nil
        /// Under mpirun: median seconds a step spent averaging gradients, and waited for it.
        var communication = 0.0, waited = 0.0
        /// With --ideal, sequential rows: the median step on one thread.
        var oneThread: Double? = nil
    }

    /// Under mpirun: the ranks (each runs the benchmark on its own batch of --batch images,
    /// gradients averaged over all); rank 0 alone prints.
    static let world = Communicator.launchedSize > 1 ? try? Communicator.world() : nil
    var communicator: Communicator? { Bench.world }
    var ranks: Int { communicator?.size ?? 1 }

    func run() throws {
        if Communicator.launchedSize > 1 && communicator == nil { _ = try Communicator.world() } // says how to get MPI
        let settings = try threading.resolve(model: options.model, batch: options.batch)
        if ideal && settings.threads < 2 {
            throw ValidationError("--ideal spreads one thread's work over the others: run it with 2 or more threads (got \(settings.threads)).")
        }
        KernelRuntime.threads = settings.threads
        let progress = Progress(quiet: json || csv)
        if let note = settings.note, !json && !csv { print(note) }
        if overlap != .off, let p = policies.first(where: { $0 != .keepAll && !$0.canOverlap }), !json && !csv {
            print("\(p) rebuilds each block on the backward thread (nothing to overlap): its row runs with overlap off")
        }
        var all = policies
        var overlapSmallest = 0 // the frontier's budgets below this have no overlapped plan
        if frontier {
            let profile = try ChainProfile.measure(try options.makeModel(), batch: options.batch, seed: options.seed)
            all = try CheckpointPlan.frontier(profile)
            if overlap != .off { overlapSmallest = CheckpointPlan.smallestBudget(profile, perBlock: false) }
        }
        if let b = budget.flatMap(CheckpointPolicy.parseBytes) { all.append(.budget(bytes: b)) }
        var configs: [Checkpointing] = []
        for policy in all {
            var overlaps: [Bool]
            switch (policy, overlap) {
            case (_, .off): overlaps = [false]
            case (let p, _) where !p.canOverlap: overlaps = [false]
            case (_, .on): overlaps = [true]
            case (_, .both): overlaps = [false, true]
            }
            if case .budget(let bytes) = policy, bytes < overlapSmallest, overlaps.contains(true) {
                overlaps = [false] // a segmentation cannot hold it
                if !json && !csv { print("\(policy) has no plan with overlap (segmentations need \(mib(overlapSmallest)) MiB): its row runs with overlap off") }
            }
            configs += overlaps.map { Checkpointing(policy: policy, overlap: $0 ? settings.overlap : nil) }
        }
        let limit = try memoryOptions.resolve()
        var runtime = 0
        if let limit {
            // the fastest plan that fits runs too
            let fit = try Trainer(model: try options.makeModel(), optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
                .fitting(memory: limit.bytes, batch: options.batch, overlap: overlap == .on ? settings.overlap : nil)
            if !configs.contains(fit.checkpointing) { configs.append(fit.checkpointing) }
            runtime = fit.memory.runtime // measured once: later trainers would read the first one's leftovers
            if !json && !csv { print("memory limit \(mib(limit.bytes)) MiB (\(limit.source)); the fastest plan that fits: \(fit.checkpointing.policy)") }
        }
        let before = KernelRuntime.coreRoundTripNanoseconds
        let rows = try limit.map { try measureWithin($0, runtime: runtime, configs, progress: progress) }
            ?? measure(configs, progress: progress)
        let roundTrip = (before, KernelRuntime.coreRoundTripNanoseconds)
        progress.clear()
        if let path = trace { try writeTrace(path, overlap: overlap == .off ? nil : settings.overlap) }
        if let path = plot { try writePlot(rows, to: path, settings: settings) }
        report(rows, settings: settings, roundTrip: roundTrip)
    }

    /// Times the configurations in turn, one step each per round, so that the drift of a
    /// shared machine falls on all of them alike; then runs one more step of each alone to
    /// read its peak RSS.
    func measure(_ configs: [Checkpointing], progress: Progress) throws -> [Row] {
        let batch = options.batch
        let first = try options.makeModel()
        let data = try SyntheticDataset(count: batch * 2, imageShape: first.imageShape, classes: first.classes, seed: options.seed)
        let batches = try (0..<2).map { b in try data.batch(Array(b * batch..<(b + 1) * batch)) }
        var trainers = try configs.map { c in
            let t = Trainer(model: try options.makeModel(), optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
            t.checkpointing = c
            t.communicator = communicator
            _ = try t.plan(batch: batch) // an infeasible budget fails here, before any timing
            return t
        }
        var times = [[Double]](repeating: [], count: configs.count), peaks = [Int](repeating: 0, count: configs.count)
        var communication = times, waited = times, oneThread = times
        let threads = KernelRuntime.threads
        for round in 0..<(warmup + steps) {
            progress.show("round \(round + 1)/\(warmup + steps) (\(warmup) warm-up), one step of each of \(configs.count) configurations")
            for (k, t) in trainers.enumerated() {
                let (x, y) = batches[round % batches.count]
                let m = try t.train(images: x, labels: y)
                if round >= warmup {
                    times[k].append(m.seconds)
                    peaks[k] = max(peaks[k], m.peakActivationBytes)
                    communication[k].append(m.communicationSeconds)
                    waited[k].append(m.communicationWaitSeconds)
                }
                // --ideal: the same trainer (so the same plan, made on all threads) on one thread
                guard ideal && configs[k].overlap == nil else { continue }
                KernelRuntime.threads = 1
                defer { KernelRuntime.threads = threads }
                let single = try t.train(images: x, labels: y)
                if round >= warmup { oneThread[k].append(single.seconds) }
            }
        }
        let rows = try configs.indices.map { k in
            let (plan, profile) = try trainers[k].plan(batch: batch)
            let p = plan.predict(profile, overlap: configs[k].effectiveOverlap)
            let sorted = times[k].sorted()
            var row = Row(policy: configs[k].policy, overlap: configs[k].overlap != nil, plan: plan,
                          median: median(sorted), spread: (sorted.last! - sorted.first!) / 2, activationBytes: peaks[k],
                          predictedBytes: p.activationPeak, rssMiB: 0,
                          communication: median(communication[k]), waited: median(waited[k]),
                          oneThread: oneThread[k].isEmpty ? nil : median(oneThread[k].sorted()))
            row.predictedOverhead = p.overhead
            if let c = communicator { // the slowest rank sets the pace
                let worst = c.maximum([row.median, row.communication, row.waited])
                (row.median, row.communication, row.waited) = (worst[0], worst[1], worst[2])
            }
            return row
        }
        trainers.removeAll()
        // peak RSS: each configuration alone, in a fresh trainer (the others' weights freed)
        return try rows.enumerated().map { k, row in
            progress.show("peak RSS of \(row.policy)\(row.overlap ? " overlapped" : "")")
            var r = row
            r.rssMiB = try {
                let t = Trainer(model: try options.makeModel(), optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
                t.checkpointing = configs[k]
                t.communicator = communicator
                try t.train(images: batches[0].images, labels: batches[0].labels) // profiles, plans, warms
                PeakRSS.reset()
                try t.train(images: batches[1].images, labels: batches[1].labels)
                return PeakRSS.mebibytes
            }()
            return r
        }
    }

    /// With --memory: each configuration alone, one after another in a trainer of its own
    /// (so the process holds one model at a time), and only those whose predicted peak RSS
    /// fits the limit; the others are named and skipped.
    func measureWithin(_ limit: MemoryLimit, runtime: Int, _ configs: [Checkpointing], progress: Progress) throws -> [Row] {
        let batch = options.batch
        var rows: [Row] = []
        for c in configs {
            PeakRSS.reset() // the previous configuration's trainer is gone
            let t = Trainer(model: try options.makeModel(), optimizer: SGD(learningRate: 0.01, momentum: 0.9), seed: options.seed)
            t.checkpointing = c
            let (plan, profile) = try t.plan(batch: batch)
            let p = plan.predict(profile, overlap: c.effectiveOverlap)
            let activations = p.activationPeak
            let memory = ProcessMemory.predict(trainer: t, batch: batch, activations: activations, overlap: c.overlap != nil,
                                               runtime: runtime)
            let name = c.policy.description + (c.overlap != nil ? " overlapped" : "")
            guard memory.fits(limit.bytes) else {
                if !json && !csv { print("skipped \(name): predicted peak RSS \(mib(memory.total)) MiB is over the limit") }
                continue
            }
            t.account.ownedLimit = activations
            let data = try SyntheticDataset(count: batch * 2, imageShape: t.model.imageShape, classes: t.model.classes, seed: options.seed)
            let batches = try (0..<2).map { b in try data.batch(Array(b * batch..<(b + 1) * batch)) }
            var times: [Double] = [], peak = 0
            for step in 0..<(warmup + steps) {
                progress.show("\(name): step \(step + 1)/\(warmup + steps) (\(warmup) warm-up)")
                let m = try t.train(images: batches[step % 2].images, labels: batches[step % 2].labels)
                if step >= warmup { times.append(m.seconds); peak = max(peak, m.peakActivationBytes) }
            }
            let sorted = times.sorted()
            var row = Row(policy: c.policy, overlap: c.overlap != nil, plan: plan, median: median(sorted),
                          spread: (sorted.last! - sorted.first!) / 2, activationBytes: peak, predictedBytes: activations,
                          rssMiB: PeakRSS.mebibytes)
            row.predictedRSS = memory.total
            row.predictedOverhead = p.overhead
            rows.append(row)
        }
        guard !rows.isEmpty else {
            throw RematError.invalidArgument("no configuration fits \(mib(limit.bytes)) MiB: raise --memory or lower --batch")
        }
        return rows
    }

    func writeTrace(_ path: String, overlap: Overlap?) throws {
        let net = try options.makeModel()
        let (x, y) = try SyntheticDataset(count: options.batch, imageShape: net.imageShape, classes: net.classes, seed: options.seed)
            .batch(Array(0..<options.batch))
        let trainer = Trainer(model: net, optimizer: SGD(), seed: options.seed)
        trainer.checkpointing = Checkpointing(policy: .sqrtN, overlap: overlap)
        trainer.communicator = communicator
        for _ in 0..<3 { try trainer.train(images: x, labels: y) } // warm: plans made, buffers sized
        let recorder = TraceRecorder()
        trainer.trace = recorder
        try trainer.train(images: x, labels: y)
        guard (communicator?.rank ?? 0) == 0 else { return }
        do {
            try recorder.json(blockNames: net.blocks.map(\.name)).write(to: URL(fileURLWithPath: path))
        } catch {
            throw ValidationError("cannot write the trace to \(path): \(error.localizedDescription)")
        }
        let note = "wrote the Chrome trace of one \(overlap == nil ? "sequential" : "overlapped") sqrt(n) step to \(path) "
            + "(open it in ui.perfetto.dev or chrome://tracing)\n"
        // beside --json or --csv, standard output holds only the rows
        FileHandle.standardError.write(Data(note.utf8))
    }

    /// --plot: the measured rows and their predictions (the predicted extra time on the
    /// measured none step) on the axes peak activation MiB and step ms.
    func writePlot(_ rows: [Row], to path: String, settings: ThreadOptions.Resolved) throws {
        let base = rows.first { $0.policy == .keepAll }?.median
        var points: [TradeOffPlot.Point] = rows.map { r in
            .init(mebibytes: Double(r.activationBytes) / 1_048_576, milliseconds: r.median * 1e3,
                  kind: r.overlap ? .overlapped : .measured, label: r.overlap ? nil : r.policy.description)
        }
        if let base {
            points += rows.filter { !$0.overlap }.map { r in
                .init(mebibytes: Double(r.predictedBytes) / 1_048_576, milliseconds: base * (1 + r.predictedOverhead) * 1e3,
                      kind: .predicted, label: nil)
            }
        }
        let peers = try peerPoints.map(PeerPoint.load) ?? []
        points += peers.map { .init(mebibytes: $0.mebibytes, milliseconds: $0.milliseconds, kind: .peer, label: nil) }
        let title = "\(options.model), batch \(options.batch), \(settings.threads) thread(s), \(KernelRuntime.isa)"
        try TradeOffPlot(title: title, points: points, peer: peers.first?.who).svg.write(toFile: path, atomically: true, encoding: .utf8)
        if !json && !csv { print("wrote the trade-off plot to \(path): open it in a browser") }
    }

    /// Share of the recompute time the overlap hid, per policy run both ways as segments (with
    /// overlap a budget chooses among segmentations only: against a per-block plan run
    /// sequentially, there is no share to give).
    func hidden(_ row: Row, in rows: [Row], base: Double?) -> Double? {
        guard row.overlap, let base,
              let sequential = rows.first(where: { $0.policy == row.policy && !$0.overlap && $0.plan.isSegmented })?.median,
              sequential > base else { return nil }
        return (sequential - row.median) / (sequential - base)
    }

    /// With --ideal: the overhead against none of the row's one-thread step spread evenly over
    /// `threads` threads.
    func idealOverhead(_ row: Row, threads: Int, base: Double?) -> Double? {
        guard let single = row.oneThread, let base else { return nil }
        return single / Double(threads) / base - 1
    }

    func report(_ rows: [Row], settings: ThreadOptions.Resolved, roundTrip: (Double, Double)) {
        guard (communicator?.rank ?? 0) == 0 else { return }
        let base = rows.first { $0.policy == .keepAll }?.median
        let split = "\(settings.overlap.backwardThreads)+\(settings.overlap.recomputeThreads)"
        func fields(_ r: Row) -> [(String, Any)] {
            [("model", options.model), ("batch", options.batch), ("threads", settings.threads), ("isa", KernelRuntime.isa.rawValue),
             ("policy", r.policy.description), ("overlap", r.overlap), ("split", r.overlap ? split : ""),
             ("lookahead", r.overlap ? settings.overlap.lookahead : 0), ("segments", r.plan.segments.count), ("plan", r.plan.description),
             ("step_seconds_median", r.median), ("step_seconds_spread", r.spread),
             ("images_per_second", Double(ranks * options.batch) / r.median), ("ranks", ranks),
             ("allreduce_seconds", r.communication),
             ("allreduce_hidden", r.communication > 0 ? 1 - r.waited / r.communication : NSNull()),
             ("peak_activation_mib", Double(r.activationBytes) / 1_048_576),
             ("predicted_activation_mib", Double(r.predictedBytes) / 1_048_576), ("peak_rss_mib", r.rssMiB),
             ("predicted_peak_rss_mib", r.predictedRSS.map { Double($0) / 1_048_576 } ?? NSNull()),
             ("overhead_vs_none", base.map { r.median / $0 - 1 } ?? NSNull()),
             ("step_ms", r.median * 1e3), ("overhead", base.map { r.median / $0 - 1 } ?? NSNull()),
             ("predicted_overhead", r.predictedOverhead),
             ("overlap_hidden", hidden(r, in: rows, base: base) ?? NSNull()),
             ("one_thread_step_seconds", r.oneThread ?? NSNull()),
             ("ideal_overhead_vs_none", idealOverhead(r, threads: settings.threads, base: base) ?? NSNull()),
             ("core_round_trip_ns_before", roundTrip.0), ("core_round_trip_ns_after", roundTrip.1)]
        }
        if json {
            for r in rows { printJSON(Dictionary(uniqueKeysWithValues: fields(r))) }
            return
        }
        if csv {
            print(fields(rows[0]).map(\.0).joined(separator: ","))
            for r in rows {
                print(fields(r).map { v in
                    switch v.1 {
                    case is NSNull: return ""
                    case let d as Double: return String(format: "%.6g", d)
                    case let s as String: return s.contains(",") ? "\"\(s)\"" : s
                    default: return "\(v.1)"
                    }
                }.joined(separator: ","))
            }
            return
        }
        print("\(options.model), batch \(options.batch), \(settings.threads) thread(s), \(KernelRuntime.isa); "
              + "overlap split \(split)\(settings.overlap.bindsCores ? " (teams bound to their cores)" : ""), lookahead \(settings.overlap.lookahead); \(steps) timed steps after \(warmup) warm-up each")
        if settings.threads > 1 {
            print(String(format: "cache-line round trip between two cores: %.0f ns before the steps, %.0f after "
                         + "(about 100: they share a last-level cache; several times more: they do not)", roundTrip.0, roundTrip.1))
        }
        print("policy          overlap  segs  step ms (median +- half range)  images/s  act. MiB (predicted)  peak RSS MiB  vs none  recompute hidden"
              + (ideal ? "  ideal (1-thread ms)" : ""))
        for r in rows {
            let versus = base.map { String(format: "%+.0f%%", 100 * (r.median / $0 - 1)) } ?? "-"
            let hid = hidden(r, in: rows, base: base).map { String(format: "%.0f%%", 100 * $0) } ?? "-"
            let best = idealOverhead(r, threads: settings.threads, base: base).map {
                String(format: "%+.0f%% (%.1f)", 100 * $0, 1e3 * r.oneThread!)
            } ?? "-"
            print(pad(r.policy.description, 16) + pad(r.overlap ? "on" : "off", 9) + pad(String(r.plan.segments.count), 6)
                  + pad(String(format: "%8.1f +- %.1f", r.median * 1e3, r.spread * 1e3), 32)
                  + pad(String(format: "%8.1f", Double(ranks * options.batch) / r.median), 10)
                  + pad("\(mib(r.activationBytes)) (\(mib(r.predictedBytes)))", 22)
                  + pad(String(format: "%12.1f", r.rssMiB) + (r.predictedRSS.map { " (\(mib($0)))" } ?? ""), 14) + pad(versus, 9) + (ideal ? pad(hid, 18) + best : hid))
        }
    }
}

/// A point another framework measured for the plot (`--peer-points`).
struct PeerPoint: Decodable {
    var who: String, label: String
    var mebibytes: Double, milliseconds: Double

    enum CodingKeys: String, CodingKey {
        case who, label, mebibytes = "peak_activation_mib", milliseconds = "step_ms"
    }

    /// The points of a JSON-lines file; an unreadable file or a malformed line is an error that names it.
    static func load(_ path: String) throws -> [PeerPoint] {
        guard let text = try? String(contentsOfFile: (path as NSString).expandingTildeInPath, encoding: .utf8) else {
            throw ValidationError("--peer-points \(path): cannot read it. Give the file Benchmarks/peers/torch_frontier.py wrote.")
        }
        let lines = text.split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }
        guard !lines.isEmpty else { throw ValidationError("--peer-points \(path) has no points.") }
        return try lines.enumerated().map { k, line in
            guard let p = try? JSONDecoder().decode(PeerPoint.self, from: Data(line.utf8)),
                  p.mebibytes.isFinite, p.mebibytes >= 0, p.milliseconds.isFinite, p.milliseconds > 0 else {
                throw ValidationError("--peer-points \(path), line \(k + 1): expected one JSON object with who, label, "
                                      + "peak_activation_mib (>= 0) and step_ms (> 0).")
            }
            return p
        }
    }
}
