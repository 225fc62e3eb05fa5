extension Trainer {
    /// Copies rank 0's parameters, BatchNorm running statistics and optimizer buffers to every
    /// rank (buffers only where every rank has them at the same size).
    func synchronizeFromRankZero() {
        guard let c = communicator, c.size > 1 else { return }
        c.broadcast(model.values.baseAddress!, count: model.parameterCount)
        var buffers: [String: [Float]] = [:]
        for (name, var values) in model.buffers {
            values.withUnsafeMutableBufferPointer { c.broadcast($0.baseAddress!, count: $0.count) }
            buffers[name] = values
        }
        model.setBuffers(buffers)
        var state = optimizer.state
        for key in state.keys.sorted() {
            let n = Double(state[key]!.count)
            guard n > 0, c.minimum([n]) == [n], c.maximum([n]) == [n] else { continue }
            state[key]!.withUnsafeMutableBufferPointer { c.broadcast($0.baseAddress!, count: $0.count) }
        }
        optimizer.state = state
    }

    /// Whether every rank holds the same parameters, bit for bit (a 64-bit hash of the arena
    /// compared across ranks). True without a communicator.
    public func replicasAgree() -> Bool {
        guard let c = communicator, c.size > 1 else { return true }
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for v in model.values { h = (h ^ UInt64(v.bitPattern)) &* 0x100_0000_01B3 }
        let halves = [Double(h >> 32), Double(h & 0xFFFF_FFFF)]
        return c.minimum(halves) == c.maximum(halves)
    }
}
