/// A float32 tensor: a shape and reference-counted, 64-byte-aligned storage that is counted
/// in a `MemoryAccount` while it lives.
///
/// Copies share storage; kernels write only into tensors they just created, so a tensor a
/// caller holds never changes underneath it.
public struct Tensor: @unchecked Sendable {
    /// Its shape; the storage holds `shape.count` floats, row-major.
    public let shape: Shape
    let storage: Storage

    /// A tensor of zeros.
    public init(zeros shape: Shape, account: MemoryAccount = .current) {
        self.shape = shape
        storage = Storage(count: shape.count, account: account)
        storage.pointer.initialize(repeating: 0, count: shape.count)
    }

    /// A tensor holding `values` (row-major); `values.count` must equal `shape.count`.
    public init(shape: Shape, values: [Float], account: MemoryAccount = .current) throws {
        guard values.count == shape.count else {
            throw RematError.shape("\(values.count) values cannot fill a tensor of shape \(shape)")
        }
        self.shape = shape
        storage = Storage(count: shape.count, account: account)
        values.withUnsafeBufferPointer { storage.pointer.initialize(from: $0.baseAddress!, count: shape.count) }
    }

    /// Uninitialised storage, for kernels that overwrite every element.
    init(uninitialized shape: Shape, account: MemoryAccount = .current) {
        self.shape = shape
        storage = Storage(count: shape.count, account: account)
    }

    /// The elements, row-major (a copy).
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.pointer, count: shape.count)) }

    /// The same storage seen with another shape of the same element count.
    public func reshaped(_ shape: Shape) throws -> Tensor {
        guard shape.count == self.shape.count else {
            throw RematError.shape("cannot reshape \(self.shape) to \(shape)")
        }
        return Tensor(shape: shape, storage: storage)
    }

    private init(shape: Shape, storage: Storage) {
        self.shape = shape
        self.storage = storage
    }

    var pointer: UnsafeMutablePointer<Float> { storage.pointer }
    /// Identifies the storage (copies and reshapes share it).
    var storageID: ObjectIdentifier { ObjectIdentifier(storage) }
    /// Bytes its storage is charged in its account.
    var accountBytes: Int { MemoryAccount.bytes(floats: storage.count) }

    final class Storage {
        let pointer: UnsafeMutablePointer<Float>
        let count: Int
        let account: MemoryAccount
        init(count: Int, account: MemoryAccount) {
            self.count = count
            self.account = account
            pointer = account.allocate(floats: count)
        }
        deinit { account.free(pointer, floats: count) }
    }
}
