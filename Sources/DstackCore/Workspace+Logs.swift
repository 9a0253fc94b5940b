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

/// What `Workspace.logs` delivers.
public enum LogEvent: Sendable {
    /// New bytes of a job's stored log.
    case output(workflow: String, Data)
    /// The run is still running but its coordinator is gone (`dstack attach` resumes it); nothing more comes.
    case coordinatorGone
}

extension Workspace {
    /// The stored logs of `jobs` of run `name` (all its jobs when nil), from `since` on (to within a few seconds),
    /// as they grow when `follow`, until the run ends. Throws `CoreError.notFound` for an unknown run or job.
    public func logs(run name: String, jobs wanted: [String]?, since cutoff: Date?, follow: Bool)
        async throws -> (jobs: [String], events: AsyncThrowingStream<LogEvent, any Error>) {
        let record = try await run(name)
        for job in wanted ?? [] where !record.jobs.contains(where: { $0.workflow == job }) {
            throw CoreError.notFound("run '\(name)' has no job '\(job)'\(didYouMean(job, record.jobs.map(\.workflow))); its jobs: \(record.jobs.map(\.workflow).joined(separator: ", "))")
        }
        let jobs = record.jobs.map(\.workflow).filter { wanted?.contains($0) ?? true }
        var offsets: [String: Int] = [:]
        if let cutoff {
            for job in record.jobs where jobs.contains(job.workflow) {
                offsets[job.workflow] = Int(clamping: try await logOffset(run: name, job: job, since: cutoff))
            }
        }
        let start = (offsets, record)
        let events = AsyncThrowingStream<LogEvent, any Error> { continuation in
            let task = Task {
                var (offsets, record) = start
                do {
                    while true {
                        for workflow in jobs {
                            let data = try await store.readLog(run: name, workflow: workflow)
                            // A start past the end (everything older than --since): from the end, for what comes next.
                            if let start = offsets[workflow], start > data.count { offsets[workflow] = data.count }
                            let start = offsets[workflow] ?? 0
                            guard data.count > start else { continue }
                            offsets[workflow] = data.count
                            continuation.yield(.output(workflow: workflow, Data(data[start...])))
                        }
                        if !follow || record.status.isFinished { break }
                        try await Task.sleep(nanoseconds: 300_000_000)
                        let before = record.status
                        record = try await run(name)
                        if before.isFinished { break }
                        if coordinatorGone(record) {
                            continuation.yield(.coordinatorGone)
                            break
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
        return (jobs, events)
    }

    /// Why each failed job of `run` failed, with the last lines of its stored log, ready to show.
    public func failureReport(_ run: RunRecord) async -> [String] {
        var messages: [String] = []
        for job in run.jobs where job.status == .failed {
            var message = "error: job '\(job.workflow)' failed on \(job.runner ?? "?"): \(job.reason ?? "unknown reason")"
            if let data = try? await store.readLog(run: run.name, workflow: job.workflow) {
                let log = String(decoding: data, as: UTF8.self)
                let lines = log.split(separator: "\n", omittingEmptySubsequences: false).suffix(11).filter { !$0.isEmpty }
                if !lines.isEmpty {
                    message += "\nlast lines of its log:\n" + lines.suffix(10).map { "  | \($0)" }.joined(separator: "\n")
                }
            }
            message += "\nfull log: dstack logs \(run.name) \(job.workflow); its job directory is kept on \(job.runner ?? "the runner") for inspection"
            messages.append(message)
        }
        return messages
    }
}
