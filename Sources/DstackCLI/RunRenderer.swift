import DstackCore
import DstackModel
import Foundation

/// Shows a run as it goes: each output line prefixed by its job, and a line when a job starts or ends.
final class RunRenderer: RunEventSink, @unchecked Sendable {
    // Guarded by `lock`: events arrive from many tasks at once.
    private let lock = NSLock()
    private var partial: [String: Data] = [:]
    private let width: Int
    private let quiet: Bool
    private let palette = ["36", "35", "34", "33", "32", "96", "95", "94"]
    private var colors: [String: String] = [:]

    init(workflows: [String], quiet: Bool = false) {
        width = workflows.map(\.count).max() ?? 0
        self.quiet = quiet
        for (i, wf) in workflows.enumerated() { colors[wf] = palette[i % palette.count] }
    }

    func emit(_ event: RunEvent) {
        guard !quiet else { return }
        lock.lock()
        defer { lock.unlock() }
        switch event {
        case .cached(let wf, let entry):
            Terminal.info("\(tag(wf)) \(Terminal.paint("cached", "36")) (results of run \(entry.run))")
        case .started(let wf, let runner):
            Terminal.info("\(tag(wf)) started on \(runner)")
        case .output(let wf, let data):
            var buffer = (partial[wf] ?? Data()) + data
            while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                line(wf, buffer[buffer.startIndex..<newline])
                buffer = Data(buffer[(newline + 1)...])
            }
            partial[wf] = buffer
        case .finished(let job):
            if let rest = partial.removeValue(forKey: job.workflow), !rest.isEmpty { line(job.workflow, rest) }
            var text = "\(tag(job.workflow)) \(Terminal.paint(job.status.rawValue, Terminal.color(for: job.status)))"
            if let start = job.startedAt, let end = job.finishedAt { text += " in \(Terminal.duration(end.timeIntervalSince(start)))" }
            if job.status != .done, let reason = job.reason { text += ": \(reason)" }
            Terminal.info(text)
        case .skipped(let wf, let reason):
            Terminal.info("\(tag(wf)) \(Terminal.paint("skipped", "33")): \(reason)")
        case .notice(let message):
            Terminal.info(message)
        }
    }

    private func tag(_ workflow: String) -> String {
        Terminal.paint("[\(workflow)]", colors[workflow] ?? "0")
    }

    private func line(_ workflow: String, _ bytes: Data) {
        let text = String(decoding: bytes, as: UTF8.self)
        let prefix = workflow.padding(toLength: width, withPad: " ", startingAt: 0) + " | "
        Terminal.out(Terminal.paint(prefix, colors[workflow] ?? "0", stdout: true) + text)
    }
}
