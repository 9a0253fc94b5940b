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
    /// On a terminal: one live line per job that moves artifacts, redrawn under the output, gone when done.
    private let liveLines = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["TERM"] != "dumb"
    private var live: [(workflow: String, text: String)] = []
    private var drawn = 0

    init(workflows: [String], quiet: Bool = false) {
        width = workflows.map(\.count).max() ?? 0
        self.quiet = quiet
        for (i, wf) in workflows.enumerated() { colors[wf] = palette[i % palette.count] }
    }

    func emit(_ event: RunEvent) {
        guard !quiet else { return }
        lock.lock()
        defer { lock.unlock() }
        if liveLines, drawn > 0 {
            // Up to the first live line, then clear to the end of the screen; they are drawn again below.
            FileHandle.standardError.write(Data("\u{1B}[\(drawn)F\u{1B}[J".utf8))
            drawn = 0
        }
        defer {
            if liveLines, !live.isEmpty {
                FileHandle.standardError.write(Data(live.map { $0.text + "\n" }.joined().utf8))
                drawn = live.count
            }
        }
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
        case .transfer(let wf, let report):
            live.removeAll { $0.workflow == wf }
            if let report, liveLines { live.append((wf, "\(tag(wf)) \(Self.progress(report))")) }
        }
    }

    /// `storing 412 MB / 954 MB, 58 MB/s, 9.4s left`.
    static func progress(_ report: TransferReport) -> String {
        var text = "\(report.verb) \(formatBytes(report.done)) / \(formatBytes(report.total)), \(formatBytes(Int64(report.bytesPerSecond)))/s"
        if let left = report.secondsLeft { text += ", \(Terminal.duration(left)) left" }
        return text
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
