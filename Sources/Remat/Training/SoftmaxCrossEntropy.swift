import RematKernels

/// Mean softmax cross-entropy over a batch, fused with its gradient.
public enum SoftmaxCrossEntropy {
    /// The mean loss of `logits` (N, classes) against `labels` (N) and d(loss)/d(logits).
    /// Throws for a label outside [0, classes) or a count mismatch.
    public static func evaluate(logits: Tensor, labels: [Int32]) throws -> (loss: Float, gradient: Tensor) {
        guard logits.shape.dims.count == 2, labels.count == logits.shape.batch else {
            throw RematError.shape("\(labels.count) labels for logits of shape \(logits.shape)")
        }
        let classes = logits.shape.dims[1]
        let grad = Tensor(uninitialized: logits.shape)
        var loss: Float = 0
        let status = kn_softmax_xent(&loss, grad.pointer, logits.pointer, labels, Int32(labels.count), Int32(classes))
        if status == KN_ELABEL {
            let bad = labels.first { $0 < 0 || Int($0) >= classes }!
            throw RematError.invalidArgument("label \(bad) is outside [0, \(classes)): check the dataset's labels")
        }
        return (loss, grad)
    }

    /// Correct predictions (argmax of each row equals the label).
    public static func correct(logits: Tensor, labels: [Int32]) -> Int {
        let k = logits.shape.dims[1], p = logits.pointer
        var hits = 0
        for n in 0..<labels.count {
            var best = 0
            for j in 1..<k where p[n * k + j] > p[n * k + best] { best = j }
            if best == Int(labels[n]) { hits += 1 }
        }
        return hits
    }
}
