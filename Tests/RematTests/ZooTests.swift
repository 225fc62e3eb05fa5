import Testing
@testable import Remat

/// Parameter counts worked out by hand from docs/WORKLOADS.md (weights + biases + BN affine),
/// and the forward GFLOP/img column of its table, to the digits it gives (resnet20: nine
/// blocks of 9.44 or 7.34 MFLOP, stem 0.88 MFLOP, a multiply-add counted as two).
@Suite("Model zoo matches docs/WORKLOADS.md")
struct ZooTests {
    @Test(arguments: [
        ("lenet5", 61_706, 0.00083),
        ("vgg11", 9_228_362, 0.306),
        ("resnet20", 272_474, 0.0816),
        ("resnet56", 855_770, 0.251),
        ("plain-deep-32", 1_147_210, 2.34),
    ])
    func parametersAndFLOPs(name: String, parameters: Int, gflops: Double) throws {
        let model = try Zoo.model(named: name)
        #expect(model.parameterCount == parameters, "\(name) parameters")
        let got = Double(model.forwardFLOPsPerImage) / 1e9
        // the table rounds to 2 or 3 significant digits
        let digits = gflops < 0.01 ? 0.000005 : gflops < 0.1 ? 0.00005 : gflops < 1 ? 0.0005 : 0.005
        #expect(abs(got - gflops) <= digits, "\(name): \(got) GFLOP/img vs \(gflops)")
        #expect(model.classes == 10)
    }

    @Test func unknownModelsAndBadDepthsAreRefused() {
        #expect(throws: RematError.self) { try Zoo.model(named: "resnet18") }
        #expect(throws: RematError.self) { try Zoo.model(named: "plain-deep-0") }
    }

    /// The same seed gives the same weights; another seed others; BN starts at (1, 0).
    @Test func seededInitialisation() throws {
        let a = try Zoo.resnet(blocksPerStage: 1, seed: 5), b = try Zoo.resnet(blocksPerStage: 1, seed: 5)
        let c = try Zoo.resnet(blocksPerStage: 1, seed: 6)
        #expect(a.parameters == b.parameters)
        #expect(a.parameters != c.parameters)
        let lenet = try Zoo.lenet5()
        // conv1 weights: uniform within +-1/sqrt(25)
        let w = lenet.parameters.prefix(150)
        #expect(w.allSatisfy { abs($0) <= 0.2 } && w.contains { abs($0) > 0.15 })
    }
}
