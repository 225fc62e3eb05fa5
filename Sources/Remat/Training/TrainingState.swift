import Foundation

/// A training run saved as a safetensors file (8-byte little-endian header length, a JSON
/// header, then raw little-endian float32 data): the parameters, BatchNorm running
/// statistics, the optimizer's buffers, and in the metadata the model, the optimizer and the
/// step, so that resuming continues bit for bit.
///
/// Saving is atomic: the file is written beside the target, flushed to disk and renamed over
/// it, so a crash or a full disk leaves the previous file intact. Loading validates the whole
/// file against the trainer before changing anything.
public enum TrainingState {
    static let format = "remat-training-state-1"
    /// Largest header accepted; a bigger claimed length is a corrupt file.
    static let maxHeader = 1 << 24

    /// Writes the trainer's state to `path` (atomically). `metadata` is stored alongside
    /// (for example the epoch and the position in it).
    public static func save(_ trainer: Trainer, to path: String, metadata: [String: String] = [:]) throws {
        var tensors: [(String, [Float])] = [("parameters", trainer.model.parameters)]
        tensors += trainer.model.buffers.map { ($0.name, $0.values) }
        for (name, values) in trainer.optimizer.state.sorted(by: { $0.key < $1.key }) {
            tensors.append(("optimizer.\(name)", values))
        }
        var meta = metadata
        meta["format"] = format
        meta["model"] = trainer.model.name
        meta["optimizer"] = trainer.optimizer.kind.rawValue
        meta["step"] = String(trainer.step)
        var header: [String: Any] = ["__metadata__": meta]
        var offset = 0
        for (name, values) in tensors {
            header[name] = ["dtype": "F32", "shape": [values.count], "data_offsets": [offset, offset + 4 * values.count]]
            offset += 4 * values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) } // the spec allows trailing spaces; keeps data aligned
        var file = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(json)
        for (_, values) in tensors {
            values.withUnsafeBytes { raw in
                // float32 little-endian: this is the host order on x86-64 and arm64
                file.append(contentsOf: raw)
            }
        }
        try writeAtomically(file, to: path)
    }

    /// Restores the trainer from `path`, returning the saved metadata. Throws
    /// `RematError.malformedFile` for a truncated or corrupt file and
    /// `RematError.invalidArgument` for a state of another model or optimizer; either way the
    /// trainer is left as it was.
    @discardableResult
    public static func load(into trainer: Trainer, from path: String) throws -> [String: String] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RematError.malformedFile("cannot read \(path): check the path and permissions")
        }
        return try restore(trainer, from: [UInt8](data), path: path)
    }

    /// The same from a state's bytes already in memory; `name` appears in error messages.
    @discardableResult
    public static func load(into trainer: Trainer, bytes: [UInt8], name: String = "the state") throws -> [String: String] {
        try restore(trainer, from: bytes, path: name)
    }

    static func restore(_ trainer: Trainer, from bytes: [UInt8], path: String) throws -> [String: String] {
        let (meta, tensors) = try parse(bytes, path: path)
        guard meta["format"] == format else {
            throw RematError.malformedFile("\(path) is not a Remat training state (format \(meta["format"] ?? "missing"))")
        }
        guard meta["model"] == trainer.model.name else {
            throw RematError.invalidArgument("\(path) holds a \(meta["model"] ?? "?") state; this trainer's model is \(trainer.model.name)")
        }
        guard meta["optimizer"] == trainer.optimizer.kind.rawValue else {
            throw RematError.invalidArgument("\(path) was saved with \(meta["optimizer"] ?? "?"); this trainer uses \(trainer.optimizer.kind)")
        }
        guard let stepText = meta["step"], let step = Int(stepText), step >= 0 else {
            throw RematError.malformedFile("\(path) has no valid step in its metadata")
        }
        let model = trainer.model
        guard let params = tensors["parameters"], params.count == model.parameterCount else {
            throw RematError.invalidArgument("\(path) holds \(tensors["parameters"]?.count ?? 0) parameters; \(model.name) has \(model.parameterCount)")
        }
        for (name, values) in model.buffers where tensors[name]?.count != values.count {
            throw RematError.invalidArgument("\(path) holds \(tensors[name]?.count ?? 0) values of \(name); \(model.name) has \(values.count)")
        }
        var optimizerState: [String: [Float]] = [:]
        for (name, values) in tensors where name.hasPrefix("optimizer.") {
            optimizerState[String(name.dropFirst("optimizer.".count))] = values
        }
        for (name, values) in optimizerState where name != "steps" && values.count != model.parameterCount && !values.isEmpty {
            throw RematError.invalidArgument("\(path): optimizer buffer \(name) has \(values.count) values, expected \(model.parameterCount)")
        }
        // everything checked: now change the trainer
        model.parameters = params
        model.setBuffers(tensors)
        trainer.optimizer.state = optimizerState
        trainer.step = step
        return meta
    }

    /// The metadata and float32 tensors of a safetensors file; every offset, size and type
    /// checked before anything is read or allocated.
    static func parse(_ bytes: [UInt8], path: String) throws -> ([String: String], [String: [Float]]) {
        guard bytes.count >= 8 else { throw RematError.malformedFile("\(path) is too short for a safetensors header") }
        var n: UInt64 = 0
        for i in 0..<8 { n |= UInt64(bytes[i]) << (8 * UInt64(i)) }
        guard n <= UInt64(maxHeader), Int(n) <= bytes.count - 8 else {
            throw RematError.malformedFile("\(path) claims a \(n)-byte header but holds \(bytes.count) bytes (truncated or corrupt)")
        }
        let headerEnd = 8 + Int(n), dataCount = bytes.count - headerEnd
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes[8..<headerEnd])),
              let header = object as? [String: Any] else {
            throw RematError.malformedFile("\(path) has a header that is not a JSON object")
        }
        var meta: [String: String] = [:]
        if let m = header["__metadata__"] {
            guard let strings = m as? [String: String] else {
                throw RematError.malformedFile("\(path): __metadata__ must map strings to strings")
            }
            meta = strings
        }
        var tensors: [String: [Float]] = [:]
        var spans: [(Int, Int)] = []
        for (name, value) in header where name != "__metadata__" {
            guard let entry = value as? [String: Any], entry["dtype"] as? String == "F32",
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw RematError.malformedFile("\(path): tensor \(name) is not a float32 entry with shape and data_offsets")
            }
            let (start, end) = (offsets[0], offsets[1])
            var count = 1
            for d in shape {
                guard d >= 0, !count.multipliedReportingOverflow(by: d).overflow else {
                    throw RematError.malformedFile("\(path): tensor \(name) has an impossible shape \(shape)")
                }
                count *= d
            }
            guard start >= 0, end >= start, end <= dataCount, end - start == 4 * count else {
                throw RematError.malformedFile("\(path): tensor \(name) spans bytes \(start)..<\(end) of \(dataCount) for \(count) floats")
            }
            spans.append((start, end))
            tensors[name] = bytes.withUnsafeBufferPointer { buf in
                let raw = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buf)[(headerEnd + start)..<(headerEnd + end)])
                return (0..<count).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) }
            }
        }
        spans.sort { $0.0 < $1.0 }
        for (a, b) in zip(spans, spans.dropFirst()) where b.0 < a.1 {
            throw RematError.malformedFile("\(path): two tensors overlap in the data section")
        }
        return (meta, tensors)
    }

    /// Writes beside the target, flushes, renames over it: the target is the old file or the
    /// new one, never a mixture.
    static func writeAtomically(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        removeStaleTemporaries(of: url)
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
        let fd = open(temp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else {
            throw RematError.invalidArgument("cannot write \(temp.path): \(String(cString: strerror(errno))); check the folder exists and is writable")
        }
        var failure: String?
        data.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 { if errno == EINTR { continue }; failure = String(cString: strerror(errno)); return }
                done += n
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil && rename(temp.path, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(temp.path)
            throw RematError.invalidArgument("saving \(path) failed (\(failure)); the previous file is unchanged")
        }
        let dir = open(url.deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 { fsync(dir); close(dir) } // make the rename itself durable
    }

    /// Deletes the temporary files (`.NAME.PID.tmp`) that saves of this target left when their
    /// process was killed mid-write; those of a process still running are its own business.
    static func removeStaleTemporaries(of url: URL) {
        let folder = url.deletingLastPathComponent()
        let prefix = ".\(url.lastPathComponent).", suffix = ".tmp"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        for name in names where name.hasPrefix(prefix) && name.hasSuffix(suffix) {
            guard let pid = Int32(name.dropFirst(prefix.count).dropLast(suffix.count)), pid > 0 else { continue }
            if pid == getpid() || (kill(pid, 0) != 0 && errno == ESRCH) {
                unlink(folder.appendingPathComponent(name).path)
            }
        }
    }
}
