import Foundation
import RematKernels

/// One convolution layer of a docs/WORKLOADS.md model, with how many times the model uses it.
public struct ConvLayer: Sendable {
    public let model: String, name: String
    public let C: Int, H: Int, K: Int, R: Int, stride: Int, pad: Int
    public let count: Int // layers of this shape in the model

    /// The layer planned at batch `N`: `algo` where the layer allows it (the implicit GEMMs
    /// need stride 1, Winograd a 3x3 kernel too), else the plan's choice.
    public func plan(batch N: Int, algo: kn_conv_algo = KN_CONV_AUTO) -> PlannedConv {
        var d = kn_conv2d_desc()
        let runs = algo == KN_CONV_IM2COL || algo == KN_CONV_REFERENCE || stride == 1 && (algo != KN_CONV_WINOGRAD || R == 3)
        d.algo = runs ? algo : KN_CONV_AUTO
        (d.N, d.C, d.H, d.W, d.K, d.R, d.S) = (Int32(N), Int32(C), Int32(H), Int32(H), Int32(K), Int32(R), Int32(R))
        (d.stride_h, d.stride_w, d.pad_h, d.pad_w, d.dil_h, d.dil_w) = (Int32(stride), Int32(stride), Int32(pad), Int32(pad), 1, 1)
        return PlannedConv(d, name: name)
    }
    /// Forward FLOPs at batch N (a multiply-add counts 2); each backward pass costs the same.
    public func flops(batch N: Int) -> Double {
        let cv = plan(batch: N)
        return 2 * Double(N * K * C * R * R) * Double(cv.P * cv.Q)
    }
}

/// A convolution's kernel plan with its sizes, destroyed with it.
public final class PlannedConv {
    public let plan: OpaquePointer
    public let N, C, H, W, K, R, S: Int32
    public let P: Int32, Q: Int32
    public var scratchFloats: Int { kn_conv2d_scratch_floats(plan) }
    public func algo(_ pass: kn_conv_pass) -> kn_conv_algo { kn_conv2d_algo(plan, pass) }

    init(_ desc: kn_conv2d_desc, name: String) {
        var d = desc, p: OpaquePointer?
        precondition(kn_conv2d_create(&p, &d) == KN_OK && p != nil, "bad layer \(name)")
        plan = p!
        (N, C, H, W, K, R, S) = (d.N, d.C, d.H, d.W, d.K, d.R, d.S)
        var pp: Int32 = 0, qq: Int32 = 0
        kn_conv2d_output(plan, &pp, &qq)
        (P, Q) = (pp, qq)
    }
    deinit { kn_conv2d_destroy(plan) }
}

/// Every distinct conv shape of lenet5 (1x28x28 inputs), resnet56, vgg11 and plain-deep-32
/// (3x32x32).
public let workloadConvs: [ConvLayer] = [
    .init(model: "lenet5", name: "1->6 5x5 @28", C: 1, H: 28, K: 6, R: 5, stride: 1, pad: 2, count: 1),
    .init(model: "lenet5", name: "6->16 5x5 @14", C: 6, H: 14, K: 16, R: 5, stride: 1, pad: 0, count: 1),
    .init(model: "resnet56", name: "stem 3->16", C: 3, H: 32, K: 16, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "resnet56", name: "s1 16->16", C: 16, H: 32, K: 16, R: 3, stride: 1, pad: 1, count: 18),
    .init(model: "resnet56", name: "s2 16->32 /2", C: 16, H: 32, K: 32, R: 3, stride: 2, pad: 1, count: 1),
    .init(model: "resnet56", name: "s2 proj 1x1 /2", C: 16, H: 32, K: 32, R: 1, stride: 2, pad: 0, count: 1),
    .init(model: "resnet56", name: "s2 32->32", C: 32, H: 16, K: 32, R: 3, stride: 1, pad: 1, count: 17),
    .init(model: "resnet56", name: "s3 32->64 /2", C: 32, H: 16, K: 64, R: 3, stride: 2, pad: 1, count: 1),
    .init(model: "resnet56", name: "s3 proj 1x1 /2", C: 32, H: 16, K: 64, R: 1, stride: 2, pad: 0, count: 1),
    .init(model: "resnet56", name: "s3 64->64", C: 64, H: 8, K: 64, R: 3, stride: 1, pad: 1, count: 17),
    .init(model: "vgg11", name: "3->64 @32", C: 3, H: 32, K: 64, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "64->128 @16", C: 64, H: 16, K: 128, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "128->256 @8", C: 128, H: 8, K: 256, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "256->256 @8", C: 256, H: 8, K: 256, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "256->512 @4", C: 256, H: 4, K: 512, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "512->512 @4", C: 512, H: 4, K: 512, R: 3, stride: 1, pad: 1, count: 1),
    .init(model: "vgg11", name: "512->512 @2", C: 512, H: 2, K: 512, R: 3, stride: 1, pad: 1, count: 2),
    .init(model: "plain-deep-32", name: "64->64 @32", C: 64, H: 32, K: 64, R: 3, stride: 1, pad: 1, count: 31),
]

/// A GEMM shape, M x N x K.
public struct GemmShape: Sendable {
    public let name: String, M: Int, N: Int, K: Int
    public var flops: Double { 2 * Double(M) * Double(N) * Double(K) }
}

/// Square sizes 128 to 2048, then the forward GEMM of each conv layer at batch 64
/// (M = K channels, N = 64 * P * Q, K = C * R * S): the im2col view of the whole batch.
public let workloadGemms: [GemmShape] =
    [128, 256, 512, 1024, 2048].map { GemmShape(name: "square \($0)", M: $0, N: $0, K: $0) }
    + workloadConvs.filter { $0.R == 3 }.map { l in
        let cv = l.plan(batch: 64)
        return GemmShape(name: "\(l.model) \(l.name)", M: l.K, N: 64 * Int(cv.P * cv.Q), K: l.C * 9)
    }

/// Median seconds of `repeats` timed calls after one warm-up call.
public func medianSeconds(repeats: Int, _ body: () -> Void) -> Double {
    body()
    var times: [Double] = []
    for _ in 0..<repeats {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
    }
    times.sort()
    return times[times.count / 2]
}

/// Owned, aligned, randomly filled float buffer (values in [-1, 1)).
public final class Buffer {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    public init(_ count: Int, seed: UInt64 = 1) {
        self.count = max(count, 1)
        pointer = UnsafeMutableRawPointer(aligned_alloc(64, (self.count * 4 + 63) / 64 * 64)!)
            .bindMemory(to: Float.self, capacity: self.count)
        var s = seed
        for i in 0..<self.count {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            pointer[i] = Float(Int32(truncatingIfNeeded: s >> 32)) / Float(Int32.max)
        }
    }
    deinit { free(pointer) }
}
