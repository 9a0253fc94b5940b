import DstackModel
import Foundation

/// Writing to the terminal: colours only on a TTY and without `NO_COLOR`, errors to standard error.
enum Terminal {
    static let colorEnabled: Bool = isatty(STDERR_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
    static let stdoutColor: Bool = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    static func error(_ message: String) {
        FileHandle.standardError.write(Data((message.hasSuffix("\n") ? message : message + "\n").utf8))
    }

    /// A status line for people, on standard error so standard output stays the jobs' output.
    static func info(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }

    static func out(_ message: String) {
        FileHandle.standardOutput.write(Data((message + "\n").utf8))
    }

    static func paint(_ text: String, _ code: String, stdout: Bool = false) -> String {
        (stdout ? stdoutColor : colorEnabled) ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    static func color(for state: JobState) -> String {
        switch state {
        case .done: return "32"
        case .cached: return "36"
        case .failed: return "31"
        case .stopped, .skipped: return "33"
        default: return "34"
        }
    }

    /// Seconds as `4.2s`, `3m12s`, `2h05m`.
    static func duration(_ seconds: TimeInterval) -> String {
        if seconds < 1 { return String(format: "%.2fs", seconds) }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let s = Int(seconds)
        if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
        return "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
    }

    /// How long ago, for tables: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
    static func ago(_ date: Date, now: Date = Date()) -> String {
        let s = max(0, Int(now.timeIntervalSince(date)))
        if s < 60 { return "\(s)s ago" }
        if s < 3600 { return "\(s / 60)m ago" }
        if s < 86400 { return "\(s / 3600)h ago" }
        return "\(s / 86400)d ago"
    }

    /// Renders rows as aligned columns under a header.
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// Prints a value as JSON on standard output.
    static func json<T: Encodable>(_ value: T) throws {
        let data = try RecordCoding.encoder().encode(value)
        out(String(decoding: data, as: UTF8.self))
    }
}
