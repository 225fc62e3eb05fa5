import Foundation
import RematKernels
import Testing

/// SplitMix64: a small seeded generator, so every random shape and value is reproducible.
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform(_ lo: Float = -1, _ hi: Float = 1) -> Float {
        lo + (hi - lo) * Float(next() >> 40) / Float(1 << 24)
    }
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }
    mutating func array(_ n: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<n).map { _ in uniform(lo, hi) }
    }
}

/// Unit roundoff of float32, and Higham's gamma_n = n u / (1 - n u): the relative error bound
/// of a length-n dot product computed in float in any order.
let unitRoundoff = Double(Float.ulpOfOne) / 2
func gamma(_ n: Int) -> Double { Double(n) * unitRoundoff / (1 - Double(n) * unitRoundoff) }

/// Expects |got[i] - want[i]| <= bound[i]; on failure reports the first mismatches and the max.
func expectClose(_ got: [Float], _ want: [Float], bound: [Double], _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(got.count == want.count, "\(what): sizes differ", sourceLocation: sourceLocation)
    var bad: [String] = []
    var maxDiff = 0.0
    for i in 0..<min(got.count, want.count) {
        let d = abs(Double(got[i]) - Double(want[i]))
        maxDiff = max(maxDiff, d)
        if !(d <= bound[i]) {
            if bad.count < 5 { bad.append("[\(i)] got \(got[i]) want \(want[i]) bound \(bound[i])") }
        }
    }
    #expect(bad.isEmpty, "\(what): max diff \(maxDiff); first mismatches: \(bad.joined(separator: "; "))",
            sourceLocation: sourceLocation)
}

/// Expects bitwise equality (the determinism contract).
func expectBitwise(_ a: [Float], _ b: [Float], _ what: String,
                   sourceLocation: SourceLocation = #_sourceLocation) {
    let first = zip(a, b).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
    #expect(a.count == b.count && first == nil,
            "\(what): differs at \(first.map { "[\($0.offset)] \($0.element.0) vs \($0.element.1)" } ?? "size")",
            sourceLocation: sourceLocation)
}

/// Tests that switch the instruction set or compare bits across runs hold this lock, so a
/// concurrently running test never changes the ISA under them.
let kernelStateLock = NSLock()

/// Runs `body` with this thread's kernel team size set to `n`, then restores it.
func withThreads<T>(_ n: Int, _ body: () throws -> T) rethrows -> T {
    let saved = kn_get_num_threads()
    kn_set_num_threads(Int32(n))
    defer { kn_set_num_threads(saved) }
    return try body()
}

/// Directional finite-difference check of a backward kernel.
///
/// With L(x) = sum_i w_i f(x)_i (in double) and a direction v of +-1, compares the central
/// difference (L(x + h v) - L(x - h v)) / 2h with <grad, v>, where grad = dL/dx from the
/// backward kernel. h is a power of two, so x +- h v is exact for |x| <= 1.
/// Tolerance from the arithmetic: each L carries at most gamma(reduction) * sum|w f| of
/// rounding, divided by h in the difference; `smooth` adds h^2-order truncation for curved ops.
/// The check also asserts that the tolerance is small against ||grad||_2 (the typical size of
/// <grad, v> for random signs), so an error in the gradient would show.
func checkGradient(_ what: String, x: [Float], outputWeights w: [Float], reduction: Int,
                   h: Float = 1.0 / 64, smooth: Bool = false, seed: UInt64 = 7,
                   forward: ([Float]) -> [Float], gradient: ([Float]) -> [Float],
                   sourceLocation: SourceLocation = #_sourceLocation) {
    var rng = SplitMix(seed)
    let v: [Float] = x.map { _ in rng.next() & 1 == 0 ? 1 : -1 }
    func loss(_ xs: [Float]) -> (Double, Double) {
        let f = forward(xs)
        var l = 0.0, mag = 0.0
        for i in 0..<f.count { l += Double(w[i]) * Double(f[i]); mag += abs(Double(w[i]) * Double(f[i])) }
        return (l, mag)
    }
    let plus = loss(zip(x, v).map { $0 + h * $1 }), minus = loss(zip(x, v).map { $0 - h * $1 })
    let numeric = (plus.0 - minus.0) / (2 * Double(h))
    let g = gradient(x)
    let analytic = zip(g, v).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    let rounding = 2 * gamma(reduction + 2) * max(plus.1, minus.1) / Double(h)
    let tolerance = rounding + (smooth ? 1e-3 * abs(analytic) : 0) + 1e-9
    #expect(abs(numeric - analytic) <= tolerance,
            "\(what): finite difference \(numeric) vs backward \(analytic) (tolerance \(tolerance))",
            sourceLocation: sourceLocation)
    let scale = g.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    #expect(tolerance < 0.05 * scale,
            "\(what): tolerance \(tolerance) too loose against ||grad|| \(scale) to detect an error",
            sourceLocation: sourceLocation)
}
