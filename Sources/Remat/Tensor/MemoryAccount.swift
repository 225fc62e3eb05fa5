import Foundation
import RematKernels

/// The accounting allocator: every activation, gradient-of-activation and kernel scratch
/// buffer is allocated here, so the live and peak bytes it reports are exact.
///
/// Threading: safe to use from several threads (the backward pass and the recompute thread).
public final class MemoryAccount: @unchecked Sendable {
    /// The account tensors use unless told otherwise.
    public static let shared = MemoryAccount()

    private let lock = NSLock()
    private var live = 0
    private var peak = 0
    /// Freed blocks kept for reuse, by size: a training step allocates the same sizes every
    /// step, and handing the OS's pages back and faulting them in again (glibc returns large
    /// blocks with munmap) cost a fifth of a resnet56 step on 2 threads. Cached bytes are not
    /// live; they stay with the process, like PyTorch's caching allocator.
    private var cache: [Int: [UnsafeMutableRawPointer]] = [:]
    private var cachedBytes = 0
    private static let cacheLimit = 1 << 30

    /// The most bytes the account may hold, live and cached together, before it hands cached
    /// blocks back to the system to take fresh memory (nil: no cap). Under a limit on the
    /// whole process the trainer sets it to the plan's predicted peak, so the cache never
    /// holds memory the limit does not have; the price is faulting pages in again for the
    /// sizes it gave back.
    public var ownedLimit: Int? {
        get { lock.withLock { limit } }
        set { lock.withLock { limit = newValue } }
    }
    private var limit: Int?

    /// An account with nothing live.
    public init() {}

    /// The account new tensors on this thread are charged to (default: `shared`).
    public static var current: MemoryAccount {
        if let p = pthread_getspecific(currentKey) { return Unmanaged<MemoryAccount>.fromOpaque(p).takeUnretainedValue() }
        return shared
    }

    /// Runs `body` with this account as the current one on this thread (a training step, or
    /// the recompute thread), so its peak covers exactly that work.
    public func withCurrent<T>(_ body: () throws -> T) rethrows -> T {
        let previous = pthread_getspecific(MemoryAccount.currentKey)
        pthread_setspecific(MemoryAccount.currentKey, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(MemoryAccount.currentKey, previous) }
        return try body()
    }

    private static let currentKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// Bytes allocated and not yet freed.
    public var liveBytes: Int { lock.withLock { live } }
    /// The most bytes live at once since creation or the last `resetPeak()`.
    public var peakBytes: Int { lock.withLock { peak } }
    /// Starts a new peak measurement from the current live bytes.
    public func resetPeak() { lock.withLock { peak = live } }

    /// Bytes a tensor of `count` floats is charged: what its buffer occupies as `kn_alloc`
    /// places it (whole 64-byte lines, at least one; from 128 KiB whole 4 KiB pages; from
    /// 2 MiB whole 2 MiB pages), so the account's bytes are resident bytes.
    static func bytes(floats count: Int) -> Int {
        let raw = count * MemoryLayout<Float>.stride
        let unit = raw >= 2 << 20 ? 2 << 20 : raw >= 128 << 10 ? 4096 : 64
        return max(64, (raw + unit - 1) / unit * unit)
    }

    /// 64-byte-aligned memory for `count` floats (uninitialised).
    func allocate(floats count: Int) -> UnsafeMutablePointer<Float> {
        let bytes = MemoryAccount.bytes(floats: count)
        var evicted: [(UnsafeMutableRawPointer, Int)] = []
        let reused: UnsafeMutableRawPointer? = lock.withLock {
            live += bytes
            peak = max(peak, live)
            if let p = cache[bytes]?.popLast() {
                cachedBytes -= bytes
                return p
            }
            // fresh memory: first give back cached blocks of other sizes the cap has no room for
            if let limit {
                while live + cachedBytes > limit, let size = cache.first(where: { !$0.value.isEmpty })?.key {
                    evicted.append((cache[size]!.removeLast(), size))
                    cachedBytes -= size
                }
            }
            return nil
        }
        for (p, size) in evicted { kn_free(p, size) }
        guard let raw = reused ?? kn_alloc(bytes) else {
            fatalError("Remat: out of memory allocating \(bytes) bytes")
        }
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    func free(_ pointer: UnsafeMutablePointer<Float>, floats count: Int) {
        let bytes = MemoryAccount.bytes(floats: count)
        let keep: Bool = lock.withLock {
            live -= bytes
            guard cachedBytes + bytes <= MemoryAccount.cacheLimit, live + cachedBytes + bytes <= limit ?? .max else { return false }
            cache[bytes, default: []].append(UnsafeMutableRawPointer(pointer))
            cachedBytes += bytes
            return true
        }
        if !keep { kn_free(pointer, bytes) }
    }

    /// Returns the cached free blocks to the system.
    public func releaseCache() {
        let blocks: [(UnsafeMutableRawPointer, Int)] = lock.withLock {
            defer { cache.removeAll(); cachedBytes = 0 }
            return cache.flatMap { size, list in list.map { ($0, size) } }
        }
        for (p, size) in blocks { kn_free(p, size) }
    }

    deinit { releaseCache() }
}
