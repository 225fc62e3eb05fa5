import Foundation

/// CIFAR-10 in its binary format: records of 1 label byte and 3,072 pixel bytes (3x32x32,
/// channel-major), in one or more files (data_batch_1.bin ... or test_batch.bin). Pixels become
/// (p / 255 - mean[c]) / std[c] with the usual CIFAR-10 statistics.
public struct CIFAR10Dataset: Dataset {
    /// Images in all the batches read.
    public let count: Int
    /// (3, 32, 32).
    public let imageShape = Shape(3, 32, 32)
    /// Ten classes.
    public let classes = 10
    private let records: [UInt8]
    /// The records (label and pixels), as bytes.
    public var residentBytes: Int { records.count }
    static let recordSize = 1 + 3072
    static let mean: [Float] = [0.4914, 0.4822, 0.4465], std: [Float] = [0.2470, 0.2435, 0.2616]

    /// Reads the files in order. Throws for a missing file, a size that is not a whole number
    /// of records, or a label outside 0...9.
    public init(files: [String]) throws {
        guard !files.isEmpty else { throw RematError.invalidArgument("CIFAR-10 needs at least one .bin file") }
        try self.init(batches: try files.map { path in
            guard let data = FileManager.default.contents(atPath: path) else {
                throw RematError.malformedFile("cannot read \(path): check the path and permissions")
            }
            return (path, [UInt8](data))
        })
    }

    /// The same from the bytes of the batch files, already in memory, each with a name for
    /// error messages.
    public init(batches: [(name: String, bytes: [UInt8])]) throws {
        guard !batches.isEmpty else { throw RematError.invalidArgument("CIFAR-10 needs at least one batch") }
        var all: [UInt8] = []
        for (path, data) in batches {
            guard !data.isEmpty, data.count % CIFAR10Dataset.recordSize == 0 else {
                throw RematError.malformedFile("\(path) holds \(data.count) bytes, not a whole number of \(CIFAR10Dataset.recordSize)-byte CIFAR-10 records (truncated or another format)")
            }
            let bytes = data
            for r in stride(from: 0, to: bytes.count, by: CIFAR10Dataset.recordSize) where bytes[r] > 9 {
                throw RematError.malformedFile("\(path): record \(r / CIFAR10Dataset.recordSize) has label \(bytes[r]), outside 0...9")
            }
            all += bytes
        }
        records = all
        count = all.count / CIFAR10Dataset.recordSize
    }

    public func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32]) {
        var values = [Float](repeating: 0, count: indices.count * 3072), labels: [Int32] = []
        for (b, i) in indices.enumerated() {
            guard i >= 0, i < count else { throw RematError.invalidArgument("index \(i) outside the dataset's \(count) images") }
            let r = i * CIFAR10Dataset.recordSize
            labels.append(Int32(records[r]))
            for c in 0..<3 {
                let scale = 1 / (255 * CIFAR10Dataset.std[c]), shift = CIFAR10Dataset.mean[c] / CIFAR10Dataset.std[c]
                for j in 0..<1024 { values[b * 3072 + c * 1024 + j] = Float(records[r + 1 + c * 1024 + j]) * scale - shift }
            }
        }
        return (try Tensor(shape: Shape(indices.count, 3, 32, 32), values: values), labels)
    }
}
