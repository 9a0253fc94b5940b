import DstackModel
import Foundation

/// What a coordinator reports while a run goes, for the terminal or for scripts.
public enum RunEvent: Sendable {
    /// A job's result was reused from an earlier run.
    case cached(workflow: String, from: CacheEntry)
    /// A job started on a runner.
    case started(workflow: String, runner: String)
    /// A job wrote output.
    case output(workflow: String, Data)
    /// A job ended (done, failed, stopped); the record says how.
    case finished(JobRecord)
    /// A job will not run because a job it needs did not succeed, or the run was stopped first.
    case skipped(workflow: String, reason: String)
    /// Something worth telling that is not a job's output (a stop was requested...).
    case notice(String)
}

/// Receives run events; called from many tasks at once, so implementations synchronise themselves.
public protocol RunEventSink: Sendable {
    /// Handles one event.
    func emit(_ event: RunEvent)
}

/// A sink that drops everything (detached coordinators, tests).
public struct SilentSink: RunEventSink {
    /// Creates a silent sink.
    public init() {}
    public func emit(_ event: RunEvent) {}
}
