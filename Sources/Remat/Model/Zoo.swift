/// The benchmark models of docs/WORKLOADS.md, built exactly as written there.
public enum Zoo {
    /// Every model name `model(named:)` accepts.
    public static let names = ["lenet5", "vgg11", "resnet20", "resnet56", "plain-deep-D (e.g. plain-deep-32)"]

    /// A zoo model by name: lenet5, vgg11, resnet20, resnet56, plain-deep-D.
    public static func model(named name: String, seed: UInt64 = 0) throws -> Model {
        switch name {
        case "lenet5": return try lenet5(seed: seed)
        case "vgg11": return try vgg11(seed: seed)
        case "resnet20": return try resnet(blocksPerStage: 3, seed: seed)
        case "resnet56": return try resnet(blocksPerStage: 9, seed: seed)
        default:
            if name.hasPrefix("plain-deep-"), let d = Int(name.dropFirst("plain-deep-".count)) {
                return try plainDeep(depth: d, seed: seed)
            }
            throw RematError.invalidArgument("no model named '\(name)'; choose one of \(names.joined(separator: ", "))")
        }
    }

    /// Throws as `model(named:)` does for a name it does not know, without building a model.
    public static func checkName(_ name: String) throws {
        if ["lenet5", "vgg11", "resnet20", "resnet56"].contains(name) { return }
        if name.hasPrefix("plain-deep-"), let d = Int(name.dropFirst("plain-deep-".count)), d >= 1 { return }
        _ = try model(named: name) // the same error as building it
    }

    /// conv5x5 1->6 p2, ReLU, M; conv5x5 6->16, ReLU, M; flatten; fc 400->120, ReLU; fc 120->84, ReLU; fc 84->10.
    public static func lenet5(seed: UInt64 = 0) throws -> Model {
        try Model(name: "lenet5", imageShape: Shape(1, 28, 28), blocks: [
            Sequential([Conv2D(1, 6, kernel: 5, padding: 2), ReLU(), Pool2D.max2x2()]),
            Sequential([Conv2D(6, 16, kernel: 5), ReLU(), Pool2D.max2x2()]),
            Sequential([Flatten(), Linear(400, 120), ReLU()]),
            Sequential([Linear(120, 84), ReLU()]),
            Sequential([Linear(84, 10)]),
        ], seed: seed)
    }

    /// [conv3x3 p1 + BN + ReLU] x 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M; flatten; fc 512->10.
    public static func vgg11(seed: UInt64 = 0) throws -> Model {
        let plan: [(Int, Bool)] = [(64, true), (128, true), (256, false), (256, true), (512, false), (512, true),
                                   (512, false), (512, true)] // (channels, max-pool after)
        var blocks: [Layer] = [], c = 3
        for (k, pool) in plan {
            var layers: [Layer] = [Conv2D(c, k, kernel: 3, padding: 1, bias: false), BatchNorm2D(k), ReLU()]
            if pool { layers.append(Pool2D.max2x2()) }
            blocks.append(Sequential(layers))
            c = k
        }
        blocks.append(Sequential([Flatten(), Linear(512, 10)]))
        return try Model(name: "vgg11", imageShape: Shape(3, 32, 32), blocks: blocks, seed: seed)
    }

    /// He et al. 2016 CIFAR ResNet with n BasicBlocks per stage (n = 3: resnet20, n = 9: resnet56).
    public static func resnet(blocksPerStage n: Int, seed: UInt64 = 0) throws -> Model {
        var blocks: [Layer] = [Sequential([Conv2D(3, 16, kernel: 3, padding: 1, bias: false), BatchNorm2D(16), ReLU()],
                                          name: "stem")]
        var c = 16
        for (stage, k) in [16, 32, 64].enumerated() {
            for i in 0..<n {
                blocks.append(BasicBlock(c, k, stride: stage > 0 && i == 0 ? 2 : 1))
                c = k
            }
        }
        blocks.append(Sequential([GlobalAvgPool(), Linear(64, 10)], name: "head"))
        return try Model(name: "resnet\(6 * n + 2)", imageShape: Shape(3, 32, 32), blocks: blocks, seed: seed)
    }

    /// conv3x3 3->64 p1 + ReLU, then D-1 x (conv3x3 64->64 p1 + ReLU), GAP, fc 64->10.
    public static func plainDeep(depth: Int, seed: UInt64 = 0) throws -> Model {
        guard depth >= 1 else { throw RematError.invalidArgument("plain-deep needs a depth of at least 1, got \(depth)") }
        var blocks: [Layer] = [Sequential([Conv2D(3, 64, kernel: 3, padding: 1), ReLU()])]
        for _ in 1..<depth { blocks.append(Sequential([Conv2D(64, 64, kernel: 3, padding: 1), ReLU()])) }
        blocks.append(Sequential([GlobalAvgPool(), Linear(64, 10)], name: "head"))
        return try Model(name: "plain-deep-\(depth)", imageShape: Shape(3, 32, 32), blocks: blocks, seed: seed)
    }
}
