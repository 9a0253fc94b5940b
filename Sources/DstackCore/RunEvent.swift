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
    /// How far a job's artifact transfer has come; nil once it is over (for a live line on a terminal).
    case transfer(workflow: String, TransferReport?)
}

/// A transfer in flight, as a progress line shows it.
public struct TransferReport: Sendable, Equatable {
    /// `storing` or `fetching`.
    public var verb: String
    /// Bytes moved so far.
    public var done: Int64
    /// Bytes to move.
    public var total: Int64
    /// Bytes per second since the transfer started.
    public var bytesPerSecond: Double

    /// Creates a report.
    public init(verb: String, done: Int64, total: Int64, bytesPerSecond: Double) {
        self.verb = verb
        self.done = done
        self.total = total
        self.bytesPerSecond = bytesPerSecond
    }

    /// Seconds left at the rate so far, when there is a rate.
    public var secondsLeft: Double? {
        bytesPerSecond > 0 ? Double(max(0, total - done)) / bytesPerSecond : nil
    }
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
