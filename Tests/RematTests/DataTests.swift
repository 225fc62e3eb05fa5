import Foundation
import Testing
@testable import Remat

/// A small valid IDX pair written to a temporary folder.
func writeIDX(images count: Int, h: Int = 4, w: Int = 3, labels: [UInt8]? = nil, folder: URL) throws -> (String, String) {
    var img: [UInt8] = [0, 0, 8, 3]
    for d in [count, h, w] { img += [UInt8(d >> 24 & 255), UInt8(d >> 16 & 255), UInt8(d >> 8 & 255), UInt8(d & 255)] }
    img += (0..<(count * h * w)).map { UInt8($0 % 251) }
    var lab: [UInt8] = [0, 0, 8, 1, UInt8(count >> 24 & 255), UInt8(count >> 16 & 255), UInt8(count >> 8 & 255), UInt8(count & 255)]
    lab += labels ?? (0..<count).map { UInt8($0 % 10) }
    let ip = folder.appendingPathComponent("images.idx").path, lp = folder.appendingPathComponent("labels.idx").path
    try Data(img).write(to: URL(fileURLWithPath: ip))
    try Data(lab).write(to: URL(fileURLWithPath: lp))
    return (ip, lp)
}

func temporaryFolder() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("remat-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

@Suite("Datasets: IDX reading, corrupt files, Fashion-MNIST")
struct DataTests {
    @Test func readsIDX() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (ip, lp) = try writeIDX(images: 5, folder: folder)
        let data = try IDXDataset(images: ip, labels: lp, mean: 0, std: 1)
        #expect(data.count == 5 && data.imageShape == Shape(1, 4, 3))
        let (x, y) = try data.batch([2, 4])
        #expect(y == [2, 4])
        #expect(x.shape == Shape(2, 1, 4, 3))
        #expect(abs(x.scalars[0] - Float(24) / 255) <= 2 * Float.ulpOfOne) // image 2 starts at byte 24
    }

    @Test func refusesMalformedFiles() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (ip, lp) = try writeIDX(images: 5, folder: folder)
        let good = try Data(contentsOf: URL(fileURLWithPath: ip))
        func refused(_ bytes: Data, _ why: String) throws {
            try bytes.write(to: URL(fileURLWithPath: ip))
            #expect(throws: RematError.self, "\(why)") { try IDXDataset(images: ip, labels: lp) }
        }
        try refused(good.prefix(good.count - 1), "truncated data")
        try refused(good + Data([0]), "trailing byte")
        try refused(good.prefix(10), "truncated header")
        var bad = good; bad[2] = 0x0D
        try refused(bad, "float type")
        bad = good; bad[0] = 1
        try refused(bad, "magic")
        bad = good; bad[4] = 0x7F // 2 billion images
        try refused(bad, "a header that claims gigabytes")
        try refused(Data([0x1F, 0x8B, 8, 0, 0, 0]), "broken gzip")
        try Data(good).write(to: URL(fileURLWithPath: ip))
        let (_, lp2) = try writeIDX(images: 5, labels: [0, 1, 2, 3, 11], folder: folder)
        #expect(throws: RematError.self, "label out of range") { try IDXDataset(images: ip, labels: lp2) }
        #expect(throws: RematError.self, "missing file") { try IDXDataset(images: ip + ".missing", labels: lp) }
    }

    /// Thousands of random truncations and corruptions: an error or a valid dataset, never a
    /// crash, a hang or an allocation the header alone asked for.
    @Test func fuzzedIDXNeverCrashes() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: folder) }
        let (ip, _) = try writeIDX(images: 7, folder: folder)
        let good = [UInt8](try Data(contentsOf: URL(fileURLWithPath: ip)))
        var rng = SeededGenerator(seed: 99)
        var refused = 0, parsed = 0
        for trial in 0..<5000 {
            var bytes = good
            if trial % 3 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1)))) }
            for _ in 0..<Int(rng.next() % 4) where !bytes.isEmpty {
                bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
            }
            do {
                let (dims, payload) = try IDXDataset.parse(bytes, expectRank: 3, path: "fuzz")
                #expect(dims.reduce(1, *) == payload.count)
                parsed += 1
            } catch is RematError {
                refused += 1
            }
        }
        #expect(refused > 1000 && parsed > 100, "refused \(refused), parsed \(parsed)")
    }

    /// LeNet-5 on Fashion-MNIST (Debian package dataset-fashion-mnist): above 80 % test
    /// accuracy after one epoch (chance is 10 %). The exact figure depends on the ISA, whose
    /// GEMM sums in another order: 84.9 % with AVX2, 85 % and more with AVX-512.
    @Test func lenetLearnsFashionMNIST() throws {
        let train = try IDXDataset.fashionMNIST(train: true), test = try IDXDataset.fashionMNIST(train: false)
        #expect(train.count == 60_000 && test.count == 10_000)
        let trainer = Trainer(model: try Zoo.lenet5(seed: 1), optimizer: SGD(learningRate: 0.05, momentum: 0.9), seed: 1)
        let order = train.shuffledIndices(seed: 1)
        for start in stride(from: 0, to: order.count, by: 64) {
            let (x, y) = try train.batch(Array(order[start..<min(start + 64, order.count)]))
            try trainer.train(images: x, labels: y)
        }
        let (_, accuracy) = try trainer.evaluate(test, batchSize: 500)
        #expect(accuracy >= 0.80, "test accuracy after one epoch: \(accuracy)")
    }
}
