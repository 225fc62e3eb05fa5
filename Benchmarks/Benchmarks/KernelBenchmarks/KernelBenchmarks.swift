// package-benchmark suite for the kernels: `swift package benchmark` in Benchmarks/.
// Each benchmark reports wall-clock time and a custom GFLOP/s metric; threads 1 and 2.
import Benchmark
import KernelShapes
import RematKernels

let gflops = BenchmarkMetric.custom("GFLOP/s", polarity: .prefersLarger, useScalingFactor: false)

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, gflops], timeUnits: .microseconds, warmupIterations: 2,
        maxDuration: .seconds(2), maxIterations: 50)

    for threads in [1, 2] {
        for g in workloadGemms {
            Benchmark("sgemm \(g.name) \(g.M)x\(g.N)x\(g.K) t\(threads)") { benchmark in
                let a = Buffer(g.M * g.K), b = Buffer(g.K * g.N, seed: 2), c = Buffer(g.M * g.N, seed: 3)
                kn_set_num_threads(Int32(threads))
                benchmark.startMeasurement()
                let t0 = BenchmarkClock.now
                _ = kn_sgemm(0, 0, Int32(g.M), Int32(g.N), Int32(g.K), 1, a.pointer, Int32(g.K),
                             b.pointer, Int32(g.N), 0, c.pointer, Int32(g.N))
                let seconds = Double((BenchmarkClock.now - t0).nanoseconds()) * 1e-9
                benchmark.stopMeasurement()
                benchmark.measurement(gflops, Int(g.flops / seconds / 1e9))
            }
        }
        for l in workloadConvs {
            for pass in ["forward", "backward-data", "backward-weights"] {
                Benchmark("conv \(l.model) \(l.name) \(pass) N64 t\(threads)") { benchmark in
                    let cv = l.plan(batch: 64)
                    let x = Buffer(Int(cv.N * cv.C * cv.H * cv.W)), w = Buffer(Int(cv.K * cv.C * cv.R * cv.S), seed: 2)
                    let y = Buffer(Int(cv.N * cv.K * cv.P * cv.Q), seed: 3), bias = Buffer(Int(cv.K), seed: 4)
                    let scratch = Buffer(cv.scratchFloats)
                    kn_set_num_threads(Int32(threads))
                    benchmark.startMeasurement()
                    let t0 = BenchmarkClock.now
                    switch pass {
                    case "forward": kn_conv2d_forward(cv.plan, y.pointer, x.pointer, w.pointer, bias.pointer, scratch.pointer)
                    case "backward-data": kn_conv2d_backward_data(cv.plan, x.pointer, y.pointer, w.pointer, scratch.pointer)
                    default: kn_conv2d_backward_weights(cv.plan, w.pointer, bias.pointer, y.pointer, x.pointer, scratch.pointer)
                    }
                    let seconds = Double((BenchmarkClock.now - t0).nanoseconds()) * 1e-9
                    benchmark.stopMeasurement()
                    benchmark.measurement(gflops, Int(l.flops(batch: 64) / seconds / 1e9))
                }
            }
        }
    }
}
