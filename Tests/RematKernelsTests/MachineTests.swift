import Foundation
import RematKernels
import Testing

/// The tuning table follows the machine's caches: what the operating system says they are, and
/// the blocks scaled from the reference machine's L2 to this one's.
@Suite("Tuning that follows the caches")
struct MachineTests {
    let kib = 1024

    /// The table kn_tuning_for_caches gives `isa` for an L2 of `l2` bytes.
    func derived(_ isa: kn_isa, l2: Int) -> (row: kn_tuning, blockings: [kn_gemm_blocking]) {
        var row = kn_tuning()
        var b = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 8)
        let n = kn_tuning_for_caches(isa, kn_caches(l1d: 0, l2: l2, l3: 0), &row, &b, 8)
        return (row, Array(b.prefix(Int(max(n, 0)))))
    }

    var builtISAs: [kn_isa] {
        (0..<KN_ISA_COUNT.rawValue).map { kn_isa($0) }.filter { kn_gemm_kernels($0, nil, 0) > 0 }
    }

    /// On Linux the caches come from sysfs; glibc's sysconf reads them from the CPU itself, an
    /// independent source, where it knows them.
    @Test func cachesAreTheSystems() {
        let c = kn_machine_caches()
        #if os(Linux)
        guard FileManager.default.fileExists(atPath: "/sys/devices/system/cpu/cpu0/cache/index0") else { return }
        #expect(c.l1d > 0 && c.l2 > c.l1d, "L1d \(c.l1d), L2 \(c.l2)")
        let l1 = sysconf(Int32(_SC_LEVEL1_DCACHE_SIZE)), l2 = sysconf(Int32(_SC_LEVEL2_CACHE_SIZE))
        if l1 > 0 { #expect(c.l1d == l1) }
        if l2 > 0 { #expect(c.l2 == l2) }
        #endif
        #expect(c.l1d >= 0 && c.l2 >= 0 && c.l3 >= 0)
    }

    /// The reference machine's caches, and an L2 nobody reported, give the table as measured
    /// (docs/ARCHITECTURE.md's GEMM table); the process starts with this machine's.
    @Test func referenceGetsTheMeasuredTable() throws {
        for isa in builtISAs {
            let ref = derived(isa, l2: kn_reference_caches().l2), unknown = derived(isa, l2: 0)
            #expect(ref.blockings.map(\.description) == unknown.blockings.map(\.description))
            #expect(withUnsafeBytes(of: ref.row) { Array($0) } == withUnsafeBytes(of: unknown.row) { Array($0) })
        }
        #if arch(x86_64)
        let avx512 = derived(KN_ISA_AVX512, l2: kn_reference_caches().l2)
        #expect(avx512.blockings.first?.description == "8x48 MC=96 KC=1024 NC=4032")
        #expect(avx512.row.winograd_cols == 96 && avx512.row.gemm_kc_in_place == 512)
        let avx2 = derived(KN_ISA_AVX2, l2: kn_reference_caches().l2)
        #expect(avx2.blockings.first?.description == "6x16 MC=144 KC=512 NC=4096")
        #expect(avx2.row.winograd_min_channels == 32 && avx512.row.winograd_min_channels == 64)
        #endif
        kernelStateLock.withLock {
            let here = derived(kn_isa_active(), l2: kn_machine_caches().l2)
            var live = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 8)
            let n = Int(kn_gemm_kernels(kn_isa_active(), &live, 8))
            #expect(live.prefix(n).map(\.description) == here.blockings.map(\.description))
            var row = kn_tuning()
            #expect(kn_tuning_get(kn_isa_active(), &row) == KN_OK)
            #expect(row.winograd_cols == here.row.winograd_cols && row.gemm_kc_in_place == here.row.gemm_kc_in_place)
        }
    }

    /// A smaller L2 shortens KC so the A block and the B sliver keep their share of it; a larger
    /// one widens MC (up to 4x the reference's L2); every row keeps the micro-kernel's contract.
    @Test func blocksFollowL2() {
        let refL2 = kn_reference_caches().l2
        for isa in builtISAs {
            let ref = derived(isa, l2: refL2)
            var lastMC = ref.blockings.map { Int($0.mc) }
            for l2 in [64 * kib, 128 * kib, 256 * kib, 512 * kib, 768 * kib, 1536 * kib, 2048 * kib, 4096 * kib, 65536 * kib] {
                let d = derived(isa, l2: l2)
                #expect(d.blockings.count == ref.blockings.count)
                let r = min(Double(l2) / Double(refL2), 4)
                for (i, (b, m)) in zip(d.blockings, ref.blockings).enumerated() {
                    let label = "\(String(cString: kn_isa_name(isa))) L2 \(l2 / kib) KiB: \(b) from \(m)"
                    #expect(b.mr == m.mr && b.nr == m.nr && b.nc == m.nc, "\(label)")
                    #expect(b.mc >= b.mr && b.mc % b.mr == 0 && b.mc <= 4096, "\(label)")
                    #expect(b.kc <= m.kc && b.kc >= min(128, m.kc), "\(label)")
                    let share = Double(m.mc + m.nr) * Double(m.kc) * r, used = Double(b.mc + b.nr) * Double(b.kc)
                    if r < 1 {
                        #expect(b.mc == m.mc || b.kc == 128, "\(label): a smaller L2 shortens KC first")
                        if b.kc > 128 { #expect(used <= share, "\(label)") }
                    } else {
                        #expect(b.kc == m.kc && used <= share && Int(b.mc) >= lastMC[i], "\(label)")
                        #expect(used + Double(b.mr * b.kc) > share || b.mc == 4096 / b.mr * b.mr, "\(label): MC as wide as fits")
                        lastMC[i] = Int(b.mc)
                    }
                }
                #expect(d.row.winograd_cols >= 32 && d.row.winograd_cols % 16 == 0)
                #expect(d.row.gemm_kc_in_place <= ref.row.gemm_kc_in_place || r > 1)
            }
            #expect(derived(isa, l2: 4096 * kib).blockings.map(\.description)
                    == derived(isa, l2: 65536 * kib).blockings.map(\.description))
        }
    }

    /// A derived table for a small L2 computes what the reference does: block-crossing GEMMs
    /// with the rows for a 128 KiB L2, on every instruction set this CPU runs but the default.
    /// The table is process-wide, and a KC of its own would change the bits of the models
    /// other suites train meanwhile on the default ISA (their exactness tests compare runs).
    @Test func smallCacheTableIsCorrect() {
        kernelStateLock.withLock {
            let saved = kn_isa_active()
            defer { _ = kn_isa_select(saved) }
            for isa in builtISAs where kn_isa_supported(isa) != 0 && isa != saved {
                var before = [kn_gemm_blocking](repeating: kn_gemm_blocking(), count: 8)
                let n = Int(kn_gemm_kernels(isa, &before, 8))
                defer { for b in before.prefix(n) { _ = kn_gemm_set_blocking(isa, b) } }
                let small = derived(isa, l2: 128 * kib).blockings
                for b in small { #expect(kn_gemm_set_blocking(isa, b) == KN_OK, "\(b)") }
                #expect(kn_isa_select(isa) == KN_OK)
                for (i, b) in small.enumerated() {
                    GemmCase(transA: Int32(i & 1), transB: 0, M: Int(b.mc) + Int(b.mr) + 1, N: 2 * Int(b.nr) + 3,
                             K: 2 * Int(b.kc) + 7, alpha: 1, beta: 0.5).check(seed: UInt64(40 + i))
                }
            }
        }
    }
}

extension kn_gemm_blocking: @retroactive CustomStringConvertible {
    public var description: String { "\(mr)x\(nr) MC=\(mc) KC=\(kc) NC=\(nc)" }
}

@Suite("A convolution planned with a tuning row of its own")
struct PlanTuningTests {
    /// The row given in the description decides the plan, whatever the table holds; a row
    /// kn_tuning_set would refuse is refused here too.
    @Test func planTakesItsOwnRow() {
        var row = kn_tuning()
        _ = kn_tuning_for_caches(kn_isa_active(), kn_reference_caches(), &row, nil, 0)
        let narrow = Conv(N: 64, C: 128, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD, tuning: row)!
        row.winograd_cols *= 4
        let wide = Conv(N: 64, C: 128, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1), algo: KN_CONV_WINOGRAD, tuning: row)!
        // 96 and 384 tiles: 6 and 24 images, then down to chunks in fours with a last one at
        // least half full: 4 (16 chunks) and 18 (18, 18, 18, 10)
        #expect(narrow.chunks.wino_images == 4 && wide.chunks.wino_images == 18,
                "\(narrow.chunks.wino_images) and \(wide.chunks.wino_images) images a chunk")
        #expect(wide.with(algo: KN_CONV_WINOGRAD)!.chunks.wino_images == 18, "a copy keeps its row")
        row.winograd_cols = 0
        #expect(Conv(N: 64, C: 128, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1), tuning: row) == nil)
        row.winograd_cols = 96
        row.transpose_tile = 33
        #expect(Conv(N: 64, C: 128, H: 8, W: 8, K: 256, R: 3, S: 3, pad: (1, 1), tuning: row) == nil)
    }
}
