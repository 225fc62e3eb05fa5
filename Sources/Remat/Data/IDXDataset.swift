import CZlib
import Foundation

/// An image dataset in the IDX format of MNIST and Fashion-MNIST (gzip-compressed or not):
/// an unsigned-byte image file (N, H, W) and a label file (N). Pixels become
/// (p / 255 - mean) / std.
///
/// Every malformed input is refused with a message: a bad magic number, a type other than
/// unsigned bytes, sizes that disagree with the data (truncated or padded files), a header
/// that claims more data than any image set holds (checked before anything is allocated),
/// labels outside [0, classes), image and label counts that differ.
public struct IDXDataset: Dataset {
    /// Images in the file.
    public let count: Int
    /// (1, H, W).
    public let imageShape: Shape
    /// Labels lie in 0 ..< classes.
    public let classes: Int
    /// Normalisation: (p / 255 - mean) / std.
    public let mean: Float, std: Float
    private let pixels: [UInt8]
    private let labels: [UInt8]
    /// The pixels and labels, as bytes.
    public var residentBytes: Int { pixels.count + labels.count }

    /// Largest IDX payload accepted (1 GiB): a header claiming more is corrupt.
    static let maxBytes = 1 << 30

    /// Reads an IDX image file (N, H, W) of bytes and its label file (gzipped or not), normalising
    /// pixels to (p / 255 - mean) / std. Throws `RematError.malformedFile` for a truncated,
    /// corrupt or mismatched pair (a header claiming more than 1 GiB is refused before reading).
    public init(images: String, labels: String, classes: Int = 10, mean: Float = 0.5, std: Float = 0.5) throws {
        try self.init(imageBytes: try IDXDataset.contents(images), labelBytes: try IDXDataset.contents(labels),
                      classes: classes, mean: mean, std: std, imagesName: images, labelsName: labels)
    }

    /// The same from the bytes of the two files (gzipped or not), already in memory; the
    /// names appear in error messages.
    public init(imageBytes: [UInt8], labelBytes: [UInt8], classes: Int = 10, mean: Float = 0.5, std: Float = 0.5,
                imagesName: String = "the image file", labelsName: String = "the label file") throws {
        let (imageDims, pixels) = try IDXDataset.decode(imageBytes, expectRank: 3, path: imagesName)
        let (labelDims, labels) = try IDXDataset.decode(labelBytes, expectRank: 1, path: labelsName)
        guard imageDims[0] == labelDims[0] else {
            throw RematError.malformedFile("\(imagesName) has \(imageDims[0]) images but \(labelsName) has \(labelDims[0]) labels")
        }
        if let (at, bad) = labels.enumerated().first(where: { Int($0.element) >= classes }) {
            throw RematError.malformedFile("\(labelsName) holds label \(bad) at index \(at), outside [0, \(classes))")
        }
        guard std > 0 else { throw RematError.invalidArgument("std must be positive, got \(std)") }
        count = imageDims[0]
        imageShape = Shape(1, imageDims[1], imageDims[2])
        self.classes = classes
        self.mean = mean
        self.std = std
        self.pixels = pixels
        self.labels = labels
    }

    /// Fashion-MNIST from the Debian package dataset-fashion-mnist, normalised with its
    /// training set's mean and standard deviation.
    public static func fashionMNIST(train: Bool, directory: String = "/usr/share/datasets/fashion-mnist") throws -> IDXDataset {
        let prefix = train ? "train" : "t10k"
        let images = "\(directory)/\(prefix)-images-idx3-ubyte.gz", labels = "\(directory)/\(prefix)-labels-idx1-ubyte.gz"
        guard FileManager.default.fileExists(atPath: images) else {
            throw RematError.malformedFile("no Fashion-MNIST at \(directory): apt-get install dataset-fashion-mnist")
        }
        return try IDXDataset(images: images, labels: labels, mean: 0.2860, std: 0.3530)
    }

    public func batch(_ indices: [Int]) throws -> (images: Tensor, labels: [Int32]) {
        let per = imageShape.count
        var values = [Float](repeating: 0, count: indices.count * per)
        var out: [Int32] = []
        out.reserveCapacity(indices.count)
        let scale = 1 / (255 * std), shift = mean / std
        for (b, i) in indices.enumerated() {
            guard i >= 0, i < count else { throw RematError.invalidArgument("index \(i) outside the dataset's \(count) images") }
            for j in 0..<per { values[b * per + j] = Float(pixels[i * per + j]) * scale - shift }
            out.append(Int32(labels[i]))
        }
        return (try Tensor(shape: Shape([indices.count] + imageShape.dims), values: values), out)
    }

    static func contents(_ path: String) throws -> [UInt8] {
        guard let raw = FileManager.default.contents(atPath: path) else {
            throw RematError.malformedFile("cannot read \(path): check the path and permissions")
        }
        return [UInt8](raw)
    }

    /// Dimensions and payload of IDX bytes (gzipped or not) of unsigned bytes with
    /// `expectRank` dimensions.
    static func decode(_ raw: [UInt8], expectRank: Int, path: String) throws -> ([Int], [UInt8]) {
        let bytes = raw.starts(with: [0x1F, 0x8B]) ? try gunzip(Data(raw), path: path) : raw
        return try parse(bytes, expectRank: expectRank, path: path)
    }

    /// Parses IDX bytes.
    static func parse(_ bytes: [UInt8], expectRank: Int, path: String) throws -> ([Int], [UInt8]) {
        guard bytes.count >= 4, bytes[0] == 0, bytes[1] == 0 else {
            throw RematError.malformedFile("\(path) is not an IDX file (bad magic number)")
        }
        guard bytes[2] == 0x08 else {
            throw RematError.malformedFile("\(path) holds IDX type 0x\(String(bytes[2], radix: 16)); only unsigned bytes (0x08) are images or labels")
        }
        let rank = Int(bytes[3])
        guard rank == expectRank else {
            throw RematError.malformedFile("\(path) has \(rank) dimensions, expected \(expectRank)")
        }
        let header = 4 + 4 * rank
        guard bytes.count >= header else { throw RematError.malformedFile("\(path) is truncated inside its header") }
        var dims: [Int] = [], total = 1
        for d in 0..<rank {
            let o = 4 + 4 * d
            let v = Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
            guard v > 0 else { throw RematError.malformedFile("\(path) declares an empty dimension") }
            total = total.multipliedReportingOverflow(by: v).overflow ? Int.max : total * v
            guard total <= maxBytes else { throw RematError.malformedFile("\(path) declares over \(maxBytes) bytes: corrupt header") }
            dims.append(v)
        }
        guard bytes.count - header == total else {
            throw RematError.malformedFile("\(path) should hold \(total) bytes after its header but holds \(bytes.count - header) (truncated or corrupt)")
        }
        return (dims, Array(bytes[header...]))
    }

    /// Inflates a gzip stream, refusing output beyond maxBytes + a header's worth.
    static func gunzip(_ data: Data, path: String) throws -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw RematError.malformedFile("cannot start decompressing \(path)")
        }
        defer { inflateEnd(&stream) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        let input = [UInt8](data)
        var status: Int32 = Z_OK
        try input.withUnsafeBufferPointer { inp in
            stream.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
            stream.avail_in = uInt(inp.count)
            repeat {
                status = chunk.withUnsafeMutableBufferPointer { buf -> Int32 in
                    stream.next_out = buf.baseAddress
                    stream.avail_out = uInt(buf.count)
                    return inflate(&stream, Z_NO_FLUSH)
                }
                guard status == Z_OK || status == Z_STREAM_END else {
                    throw RematError.malformedFile("\(path) is not valid gzip data (zlib error \(status))")
                }
                out.append(contentsOf: chunk[0..<(chunk.count - Int(stream.avail_out))])
                guard out.count <= maxBytes + 64 else { throw RematError.malformedFile("\(path) inflates beyond \(maxBytes) bytes") }
                if status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0 {
                    throw RematError.malformedFile("\(path) ends in the middle of its gzip stream (truncated)")
                }
            } while status != Z_STREAM_END
        }
        return out
    }
}
