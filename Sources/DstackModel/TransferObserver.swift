/// One stretch of a transfer of artifacts that goes through this machine (the relay): from the runner to here, from
/// here to storage, from storage to here, from here to the runner.
public enum TransferLeg: Sendable, Equatable {
    case fromRunner
    case toStorage
    case fromStorage
    case toRunner
}

/// Where the code that moves artifact bytes (storage, runners) says how far it has come, so that people see the
/// data move (docs/transfers.md).
///
/// The coordinator binds one around a job's storing or staging (a task-local, so that no layer in between needs a
/// parameter for it; child tasks inherit it). A layer that starts a stretch says so with `leg` and about how many
/// bytes it will move (an estimate where folders are involved), then reports bytes with `moved` as they land. Code
/// that runs on threads of its own (not the task's) reads `current` first and hands the value on.
public struct TransferObserver: Sendable {
    /// A stretch starts: about `bytes` to move.
    public var leg: @Sendable (TransferLeg, Int64) -> Void
    /// `bytes` more moved.
    public var moved: @Sendable (Int64) -> Void

    /// Creates an observer.
    public init(leg: @escaping @Sendable (TransferLeg, Int64) -> Void, moved: @escaping @Sendable (Int64) -> Void) {
        self.leg = leg
        self.moved = moved
    }

    /// The observer of the current task's transfer; nil when nobody watches.
    @TaskLocal public static var current: TransferObserver?
}
