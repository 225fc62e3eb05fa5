/// Every error Remat throws: what went wrong and what to do about it.
public enum RematError: Error, CustomStringConvertible, Equatable {
    /// A tensor shape that does not fit (a layer's input, a batch, a file's images).
    case shape(String)
    /// An argument out of range (a label, a size, a hyper-parameter).
    case invalidArgument(String)
    /// The loss or a gradient stopped being finite.
    case nonFinite(String)
    /// A file that cannot be read as what it claims to be.
    case malformedFile(String)

    public var description: String {
        switch self {
        case .shape(let m), .invalidArgument(let m), .nonFinite(let m), .malformedFile(let m): return m
        }
    }
}
