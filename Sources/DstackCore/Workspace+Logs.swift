import DstackModel
import DstackStorage
import Foundation

extension Workspace {
    /// Where `dstack logs --since` starts in a job's stored log: the first byte that arrived at `cutoff` or later
    /// (give or take the few seconds between two time marks, erring towards showing more); `Int64.max` when all of
    /// it is older. A job without marks nor attempts (a run recorded before they were kept) is shown whole unless
    /// it finished before `cutoff`.
    public func logOffset(run: String, job: JobRecord, since cutoff: Date) async throws -> Int64 {
        var marks = try await store.logMarks(run: run, workflow: job.workflow)
        // Each attempt's start is a mark too: its output begins at `logStart` (the first attempt's at 0).
        for (i, attempt) in job.attempts.enumerated() {
            if let start = attempt.logStart ?? (i == 0 ? 0 : nil) { marks.append((start, attempt.startedAt)) }
        }
        marks.sort { ($0.offset, $0.time) < ($1.offset, $1.time) }
        guard !marks.isEmpty else {
            if let finished = job.finishedAt, finished < cutoff { return .max }
            return 0
        }
        // Output after a mark arrived before the next mark, and within `markInterval` of it.
        if let last = marks.last(where: { $0.time <= cutoff }), last.time.addingTimeInterval(JobOutput.markInterval) > cutoff {
            return last.offset
        }
        return marks.first(where: { $0.time > cutoff })?.offset ?? .max
    }
}
