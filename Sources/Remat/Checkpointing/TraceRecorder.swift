import Foundation

/// Records the forward, backward and recompute spans of each block per thread, and writes
/// them in the Chrome trace-event JSON format (open in Perfetto or chrome://tracing).
public final class TraceRecorder: @unchecked Sendable {
    struct Event { let name: String; let block: Int; let thread: UInt64; let start: UInt64; let end: UInt64 }
    private let lock = NSLock()
    private var events: [Event] = []
    private var names: [UInt64: String] = [:]
    private let origin = DispatchTimeSource.now()

    /// An empty recorder; set it as `Trainer.trace` to record steps.
    public init() {}

    func nameThread(_ name: String) {
        let id = UInt64(pthread_self())
        lock.withLock { names[id] = name }
    }

    func record<T>(_ name: String, block: Int, _ body: () throws -> T) rethrows -> T {
        let start = DispatchTimeSource.now()
        defer { add(name, block: block, start: start) }
        return try body()
    }

    /// A span on this thread from `start` until now.
    func add(_ name: String, block: Int, start: UInt64) {
        let e = Event(name: name, block: block, thread: UInt64(pthread_self()), start: start, end: DispatchTimeSource.now())
        lock.withLock { events.append(e) }
    }

    /// The recorded spans as Chrome trace-event JSON.
    public func json(blockNames: [String]) -> Data {
        lock.lock()
        defer { lock.unlock() }
        var tids: [UInt64: Int] = [:]
        for e in events where tids[e.thread] == nil { tids[e.thread] = tids.count + 1 }
        var out: [[String: Any]] = tids.map { (thread, tid) in
            ["name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": ["name": names[thread] ?? "backward (main)"]]
        }
        for e in events {
            let label = e.block < blockNames.count ? blockNames[e.block] : "block \(e.block)"
            out.append(["name": "\(e.name) \(e.block): \(label)", "cat": e.name, "ph": "X", "pid": 1,
                        "tid": tids[e.thread]!, "ts": Double(e.start - origin) / 1000,
                        "dur": Double(e.end - e.start) / 1000])
        }
        return (try? JSONSerialization.data(withJSONObject: ["traceEvents": out], options: [.prettyPrinted])) ?? Data()
    }
}

extension Optional where Wrapped == TraceRecorder {
    /// Runs body, recording it when a recorder is present.
    func span<T>(_ name: String, block: Int, _ body: () throws -> T) rethrows -> T {
        guard let r = self else { return try body() }
        return try r.record(name, block: block, body)
    }
}
