// kernel-bench: GFLOP/s of Remat's SGEMM and conv kernels on the docs/WORKLOADS.md shapes, with the
// fraction of this machine's measured FMA peak. Human-readable by default; --json prints one
// object per line for Benchmarks/peers/compare_kernels.py.
import ArgumentParser
import Foundation
import KernelShapes
import RematKernels

@main
struct KernelBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernel-bench",
        abstract: "Time Remat's SGEMM and Conv2d kernels on the benchmark workloads' shapes.",
        discussion: """
            Medians over --repeats timed calls, after a second of warm-up. Examples:
              kernel-bench                      # everything, on all cores
              kernel-bench --threads 1 --only conv
              kernel-bench --json --only gemm   # for scripts
            """)

    enum Part: String, ExpressibleByArgument, CaseIterable { case gemm, conv, peak }
    enum Algo: String, ExpressibleByArgument, CaseIterable {
        case auto, paddedGrid = "padded-grid", batchInner = "batch-inner", im2col, reference, winograd
    }

    @Option(help: "Kernel team size (default: all cores).") var threads: Int?
    @Option(help: "Timed calls per kernel; the median is reported.") var repeats = 7
    @Option(help: "Only one part: \(Part.allCases.map(\.rawValue).joined(separator: ", ")).") var only: Part?
    @Option(help: "Conv algorithm: auto (the plan's choice per pass), padded-grid or batch-inner (stride-1 layers), winograd (3x3 stride-1 layers; the others keep the plan's choice), im2col or reference.")
    var algo: Algo = .auto
    @Option(help: "Only the conv layers of this model (lenet5, resnet56, vgg11, plain-deep-32).") var model: String?
    @Option(help: "Cache blocking MC,KC,NC for every GEMM micro-kernel (MC and NC rounded up to each one's MR and NR), instead of the defaults.")
    var blocking: String?
    @Flag(help: "One JSON object per line instead of tables.") var json = false

    func validate() throws {
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1 (got \(t)).") }
        if repeats < 1 { throw ValidationError("--repeats must be at least 1 (got \(repeats)).") }
        if let m = model, !workloadConvs.contains(where: { $0.model == m }) {
            throw ValidationError("--model \(m): no such model; use one of \(Set(workloadConvs.map(\.model)).sorted().joined(separator: ", ")).")
        }
        if let b = blocking, blockSizes(b) == nil {
            throw ValidationError("--blocking \(b): expected three positive integers MC,KC,NC, for example 96,1024,4032.")
        }
    }

    func blockSizes(_ text: String) -> (mc: Int32, kc: Int32, nc: Int32)? {
        let v = text.split(separator: ",").compactMap { Int32($0) }
        guard v.count == 3, v.allSatisfy({ $0 > 0 }) else { return nil }
        return (v[0], v[1], v[2])
    }

    /// Applies --blocking to each micro-kernel of the active instruction set.
    func applyBlocking() throws {
        guard let text = blocking, let b = blockSizes(text) else { return }
        var rows = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 8)
        let n = Int(kn_gemm_kernels(kn_isa_active(), &rows, 8))
        for var r in rows.prefix(n) {
            r.mc = (b.mc + r.mr - 1) / r.mr * r.mr
            r.kc = b.kc
            r.nc = (b.nc + r.nr - 1) / r.nr * r.nr
            guard kn_gemm_set_blocking(kn_isa_active(), r) == KN_OK else {
                throw ValidationError("--blocking \(text): refused for the \(r.mr)x\(r.nr) micro-kernel (at most MC 4096, KC 4096, NC 65536).")
            }
        }
    }

    func run() throws {
        let team = threads ?? Int(kn_num_cores())
        kn_set_num_threads(Int32(team))
        try applyBlocking()
        let isa = String(cString: kn_isa_name(kn_isa_active()))
        warmUp()
        let peak = kn_peak_gflops(), roundTrip = kn_core_round_trip_ns()
        if json {
            emit(["kind": "peak", "threads": team, "gflops": peak, "isa": isa, "core_round_trip_ns": roundTrip])
        } else {
            print("Remat kernels: \(isa), \(team) thread(s), measured FMA peak \(Int(peak)) GFLOP/s"
                  + (team > 1 ? ", cache-line round trip between two cores \(Int(roundTrip)) ns" : ""))
            print(String(cString: kn_dispatch_report()).split(separator: "\n").prefix(2).joined(separator: "\n"))
        }
        if only == nil || only == .gemm { gemm(team: team, peak: peak, isa: isa) }
        if only == nil || only == .conv { conv(team: team, peak: peak) }
    }

    /// A new team runs slowly for its first ~0.1 s (its threads are still being placed on
    /// cores): a second of GEMMs first, so the timed calls see the steady state.
    func warmUp() {
        let a = Buffer(512 * 512), c = Buffer(512 * 512)
        let start = DispatchTime.now().uptimeNanoseconds
        while DispatchTime.now().uptimeNanoseconds - start < 1_000_000_000 {
            _ = kn_sgemm(0, 0, 512, 512, 512, 1, a.pointer, 512, a.pointer, 512, 0, c.pointer, 512)
        }
    }

    func gemm(team: Int, peak: Double, isa: String) {
        if !json { print("\nSGEMM                           M x N x K             GFLOP/s  % of peak") }
        for g in workloadGemms {
            let a = Buffer(g.M * g.K), b = Buffer(g.K * g.N, seed: 2), c = Buffer(g.M * g.N, seed: 3)
            let t = medianSeconds(repeats: repeats) {
                _ = kn_sgemm(0, 0, Int32(g.M), Int32(g.N), Int32(g.K), 1, a.pointer, Int32(g.K),
                             b.pointer, Int32(g.N), 0, c.pointer, Int32(g.N))
            }
            let gf = g.flops / t / 1e9
            if json {
                emit(["kind": "gemm", "name": g.name, "M": g.M, "N": g.N, "K": g.K, "threads": team,
                      "seconds": t, "gflops": gf, "isa": isa])
            } else {
                print(pad(g.name, 32) + pad("\(g.M)x\(g.N)x\(g.K)", 20) + lpad(String(format: "%.0f", gf), 9)
                      + lpad(String(format: "%.0f%%", 100 * gf / peak), 11))
            }
        }
    }

    func conv(team: Int, peak: Double) {
        let request = [Algo.auto: KN_CONV_AUTO, .paddedGrid: KN_CONV_PADDED_GRID, .batchInner: KN_CONV_BATCH_INNER,
                       .im2col: KN_CONV_IM2COL, .reference: KN_CONV_REFERENCE, .winograd: KN_CONV_WINOGRAD][algo]!
        if !json { print("\nConv2d, batch 64              pass      algo          ms    GFLOP/s  % of peak") }
        for l in workloadConvs where model == nil || l.model == model {
            let cv = l.plan(batch: 64, algo: request)
            let x = Buffer(Int(cv.N * cv.C * cv.H * cv.W)), w = Buffer(Int(cv.K * cv.C * cv.R * cv.S), seed: 2)
            let bias = Buffer(Int(cv.K), seed: 3), y = Buffer(Int(cv.N * cv.K * cv.P * cv.Q), seed: 4)
            let dx = Buffer(x.count, seed: 5), dw = Buffer(w.count, seed: 6), db = Buffer(bias.count, seed: 7)
            let scratch = Buffer(cv.scratchFloats)
            let fwd = medianSeconds(repeats: repeats) { kn_conv2d_forward(cv.plan, y.pointer, x.pointer, w.pointer, bias.pointer, scratch.pointer) }
            let bd = medianSeconds(repeats: repeats) { kn_conv2d_backward_data(cv.plan, dx.pointer, y.pointer, w.pointer, scratch.pointer) }
            let bw = medianSeconds(repeats: repeats) { kn_conv2d_backward_weights(cv.plan, dw.pointer, db.pointer, y.pointer, x.pointer, scratch.pointer) }
            let flops = l.flops(batch: 64)
            if json {
                emit(["kind": "conv", "model": l.model, "name": l.name, "count": l.count, "threads": team,
                      "C": l.C, "H": l.H, "K": l.K, "R": l.R, "stride": l.stride, "pad": l.pad, "flops": flops,
                      "forward": fwd, "backward_data": bd, "backward_weights": bw,
                      "algos": [KN_PASS_FORWARD, KN_PASS_BACKWARD_DATA, KN_PASS_BACKWARD_WEIGHTS].map { name(cv.algo($0)) }])
                continue
            }
            for (pass, t, a) in [("fwd", fwd, cv.algo(KN_PASS_FORWARD)), ("bwd-d", bd, cv.algo(KN_PASS_BACKWARD_DATA)),
                                 ("bwd-w", bw, cv.algo(KN_PASS_BACKWARD_WEIGHTS))] {
                print(pad("\(l.model) \(l.name)", 30) + pad(pass, 10) + pad(name(a), 12)
                      + lpad(String(format: "%.2f", t * 1e3), 7) + lpad(String(format: "%.0f", flops / t / 1e9), 10)
                      + lpad(String(format: "%.0f%%", 100 * flops / t / 1e9 / peak), 11))
            }
        }
    }

    func name(_ a: kn_conv_algo) -> String { String(cString: kn_conv_algo_name(a)) }
    func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
    func lpad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
    func emit(_ fields: [String: Any]) {
        let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
