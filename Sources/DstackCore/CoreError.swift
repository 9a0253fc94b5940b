/// Failures of orchestration that are not configuration errors, in words a person can act on.
public enum CoreError: Error, Sendable, CustomStringConvertible {
    /// A local file could not be read or written.
    case io(String)
    /// A run, job, tag or artifact asked for does not exist.
    case notFound(String)
    /// The request makes no sense in the current state (stopping a finished run...).
    case invalid(String)
    /// Storage or runners cannot be used; exit status 3.
    case infrastructure(String)

    public var description: String {
        switch self {
        case .io(let m), .notFound(let m), .invalid(let m), .infrastructure(let m): return m
        }
    }
}
