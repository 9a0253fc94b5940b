/// What one step of an operation achieved.
enum StepResult {
    /// The operation is complete and can be dropped.
    case finished
    /// Something moved; the loop steps everyone again before it sleeps.
    case progressed
    /// Every call would block; the loop may sleep until the socket is ready.
    case blocked
}

/// Work that runs on a session's loop thread, one non-blocking step at a time.
///
/// Operations are created by the async API, handed to the loop once, and from then on touched only on the loop
/// thread; that is why conforming classes may be `@unchecked Sendable`.
protocol LoopOperation: AnyObject, Sendable {
    /// What the operation does, for timeout messages and logs.
    var label: String { get }
    /// The longest time without progress before the loop aborts the operation; nil for none.
    var idleTimeout: Duration? { get }
    /// Whether the operation holds one of the session's channel slots while it runs.
    var usesChannel: Bool { get }
    /// Makes as much progress as possible without blocking.
    func step(_ loop: SSHEventLoop) -> StepResult
    /// Reports `error` to the caller now; later steps only release what the operation holds.
    func abort(_ error: SSHError)
    /// A local descriptor the loop also waits on, and for what (a tunnel's socket); nil for none.
    var pollRequest: (fd: Int32, events: Int16)? { get }
}

extension LoopOperation {
    /// Most operations wait on the SSH connection only.
    var pollRequest: (fd: Int32, events: Int16)? { nil }
}

/// The completion half of an operation: resumes its caller exactly once.
class OperationBase<Value: Sendable>: @unchecked Sendable {
    /// What the operation does, for messages.
    let label: String
    /// The idle timeout the loop enforces.
    let idleTimeout: Duration?
    private var completion: (@Sendable (Result<Value, SSHError>) -> Void)?

    init(label: String, idleTimeout: Duration?, completion: @escaping @Sendable (Result<Value, SSHError>) -> Void) {
        self.label = label
        self.idleTimeout = idleTimeout
        self.completion = completion
    }

    /// Whether the caller has been answered already (success, failure or abort).
    var isAnswered: Bool { completion == nil }

    /// Answers the caller with a value, once.
    func succeed(_ value: Value) {
        completion?(.success(value))
        completion = nil
    }

    /// Answers the caller with an error, once.
    func fail(_ error: SSHError) {
        completion?(.failure(error))
        completion = nil
    }
}
