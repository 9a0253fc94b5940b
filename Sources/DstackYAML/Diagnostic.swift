/// An error that points into a source file, rendered the way a compiler does:
/// `FILE:LINE:COL: error: MESSAGE`, then the source line and a caret under the column.
public struct Diagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    /// The file as the user should see it (usually relative to the project).
    public var file: String
    /// Where the problem is.
    public var mark: Mark
    /// What is wrong and, where possible, what to do about it (lowercase, no trailing period).
    public var message: String
    /// The text of the offending line, if it is known.
    public var sourceLine: String?

    /// Creates a diagnostic at `mark` in `file`, quoting `sourceLine` if given.
    public init(file: String, mark: Mark, message: String, sourceLine: String? = nil) {
        self.file = file
        self.mark = mark
        self.message = message
        self.sourceLine = sourceLine
    }

    /// Creates a diagnostic at `mark` in `source`, quoting the line it points to.
    public init(_ source: SourceFile, _ mark: Mark, _ message: String) {
        self.init(file: source.displayName, mark: mark, message: message, sourceLine: source.line(mark.line))
    }

    public var description: String {
        var out = "\(file):\(mark.line):\(mark.column): error: \(message)"
        if let sourceLine {
            let expanded = sourceLine.replacingTabs()
            out += "\n" + expanded
            // The caret sits under the column, counting a tab as the spaces it was expanded to.
            let prefix = String(sourceLine.prefix(max(0, mark.column - 1))).replacingTabs()
            out += "\n" + String(repeating: " ", count: prefix.count) + "^"
        }
        return out
    }
}

/// A file's name and text, kept so that errors can quote the line they point at.
public struct SourceFile: Sendable, Hashable {
    /// The name shown in errors.
    public var displayName: String
    /// The whole text.
    public var text: String

    /// Creates a source named `displayName` holding `text`.
    public init(displayName: String, text: String) {
        self.displayName = displayName
        self.text = text
    }

    /// The 1-based `line` of the text, without its line break; nil past the end.
    ///
    /// Lines break where libyaml breaks them: LF, CRLF, CR, NEL, LS and PS. (Swift reads CRLF as one
    /// `Character`, so splitting on "\n" alone would miss it.)
    public func line(_ line: Int) -> String? {
        guard line >= 1 else { return nil }
        var current = 1
        for sub in text.split(omittingEmptySubsequences: false, whereSeparator: Self.isLineBreak) {
            if current == line { return String(sub) }
            current += 1
        }
        return nil
    }

    private static func isLineBreak(_ ch: Character) -> Bool {
        ch == "\n" || ch == "\r\n" || ch == "\r" || ch == "\u{85}" || ch == "\u{2028}" || ch == "\u{2029}"
    }
}

extension String {
    fileprivate func replacingTabs() -> String {
        var out = ""
        for ch in self {
            if ch == "\t" {
                out += String(repeating: " ", count: 4 - out.count % 4)
            } else {
                out.append(ch)
            }
        }
        return out
    }
}
