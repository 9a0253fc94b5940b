import DstackModel
import Foundation

/// When a job's output arrived: `runs/<run>/jobs/<job>/log.times` holds `OFFSET TIME` lines, one now and then
/// while output flows, each saying that the stored log's bytes from OFFSET on arrived at TIME or later. It is what
/// `dstack logs --since` reads: the log itself holds the job's bytes exactly as it wrote them.
extension RunStore {
    /// The key of a job's log marks.
    func logMarksKey(run: String, workflow: String) -> String { key("runs", run, "jobs", workflow, "log.times") }

    /// Records that the job's stored log from `offset` on arrived at `time` or later.
    public func appendLogMark(run: String, workflow: String, offset: Int64, at time: Date) async throws {
        try await storage.append(logMarksKey(run: run, workflow: workflow), data: Data("\(offset) \(formatTimestamp(time))\n".utf8))
    }

    /// The marks recorded for a job's log, oldest first (none for runs recorded before marks were kept).
    public func logMarks(run: String, workflow: String) async throws -> [(offset: Int64, time: Date)] {
        guard let data = try await storage.read(logMarksKey(run: run, workflow: workflow)) else { return [] }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, let offset = Int64(parts[0]), let time = parseTimestamp(String(parts[1])) else { return nil }
            return (offset, time)
        }
    }
}
