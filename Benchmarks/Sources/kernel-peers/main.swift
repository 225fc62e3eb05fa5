// Our side of the side-by-side kernel runs: prints one JSON object per line with the median
// time of each kernel, so peers/compare_kernels.py can set it beside NumPy and PyTorch.
//   kernel-peers gemm|conv|peak THREADS [REPEATS]
import Foundation
import KernelShapes
import RematKernels

let args = CommandLine.arguments
guard args.count >= 3, let threads = Int(args[2]), threads >= 1, ["gemm", "conv", "peak"].contains(args[1]) else {
    FileHandle.standardError.write("usage: kernel-peers gemm|conv|peak THREADS [REPEATS]\n".data(using: .utf8)!)
    exit(2)
}
let repeats = args.count > 3 ? max(1, Int(args[3]) ?? 5) : 5
kn_set_num_threads(Int32(threads))
// REMAT_CONV_ALGO=implicit|im2col measures one algorithm; the default is the plan's choice
let algo: kn_conv_algo = ["implicit": KN_CONV_IMPLICIT, "im2col": KN_CONV_IM2COL][ProcessInfo.processInfo.environment["REMAT_CONV_ALGO"] ?? ""] ?? KN_CONV_AUTO

// A new team runs slowly for its first ~0.1 s (its threads are still being placed on cores):
// run a second of GEMMs first so the timed calls see the steady state.
do {
    let a = Buffer(512 * 512), c = Buffer(512 * 512)
    let start = DispatchTime.now().uptimeNanoseconds
    while DispatchTime.now().uptimeNanoseconds - start < 1_000_000_000 {
        _ = kn_sgemm(0, 0, 512, 512, 512, 1, a.pointer, 512, a.pointer, 512, 0, c.pointer, 512)
    }
}

func emit(_ fields: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

if args[1] == "peak" {
    emit(["kind": "peak", "threads": threads, "gflops": kn_peak_gflops(), "isa": String(cString: kn_isa_name(kn_isa_active()))])
} else if args[1] == "gemm" {
    for g in workloadGemms {
        let a = Buffer(g.M * g.K), b = Buffer(g.K * g.N, seed: 2), c = Buffer(g.M * g.N, seed: 3)
        let t = medianSeconds(repeats: repeats) {
            _ = kn_sgemm(0, 0, Int32(g.M), Int32(g.N), Int32(g.K), 1, a.pointer, Int32(g.K), b.pointer, Int32(g.N), 0, c.pointer, Int32(g.N))
        }
        emit(["kind": "gemm", "name": g.name, "M": g.M, "N": g.N, "K": g.K, "threads": threads,
              "seconds": t, "gflops": g.flops / t / 1e9, "isa": String(cString: kn_isa_name(kn_isa_active()))])
    }
} else {
    for l in workloadConvs {
        var cv = l.plan(batch: 64, algo: algo)
        let x = Buffer(Int(cv.N * cv.C * cv.H * cv.W)), w = Buffer(Int(cv.K * cv.C * cv.R * cv.S), seed: 2)
        let bias = Buffer(Int(cv.K), seed: 3), y = Buffer(Int(cv.N * cv.K * cv.P * cv.Q), seed: 4)
        let dx = Buffer(x.count, seed: 5), dw = Buffer(w.count, seed: 6), db = Buffer(bias.count, seed: 7)
        let scratch = Buffer(cv.scratch_floats)
        let fwd = medianSeconds(repeats: repeats) { kn_conv2d_forward(&cv, y.pointer, x.pointer, w.pointer, bias.pointer, scratch.pointer) }
        let bwdData = medianSeconds(repeats: repeats) { kn_conv2d_backward_data(&cv, dx.pointer, y.pointer, w.pointer, scratch.pointer) }
        let bwdWeights = medianSeconds(repeats: repeats) { kn_conv2d_backward_weights(&cv, dw.pointer, db.pointer, y.pointer, x.pointer, scratch.pointer) }
        emit(["kind": "conv", "model": l.model, "name": l.name, "count": l.count, "threads": threads,
              "C": l.C, "H": l.H, "K": l.K, "R": l.R, "stride": l.stride, "pad": l.pad, "flops": l.flops(batch: 64),
              "forward": fwd, "backward_data": bwdData, "backward_weights": bwdWeights])
    }
}
