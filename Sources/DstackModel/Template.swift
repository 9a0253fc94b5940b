import Foundation

/// A string that may hold `${{ name }}` references to variables.
public struct Template: Sendable, Hashable {
    /// One piece of a template: literal text or a variable reference.
    public enum Part: Sendable, Hashable {
        /// Text kept as written.
        case text(String)
        /// A `${{ name }}` reference, with the 0-based character offset of `$` in the raw string.
        case variable(String, offset: Int)
    }

    /// The string as written.
    public var raw: String
    /// The string split into text and references.
    public var parts: [Part]

    /// Parses `raw`; throws a message and the 0-based offset of the problem for a malformed reference.
    public init(_ raw: String) throws(TemplateError) {
        self.raw = raw
        var parts: [Part] = []
        var text = ""
        let chars = Array(raw)
        var i = 0
        while i < chars.count {
            if chars[i] == "$", i + 2 < chars.count, chars[i + 1] == "{", chars[i + 2] == "{" {
                let start = i
                var j = i + 3
                var found = false
                while j + 1 < chars.count {
                    if chars[j] == "}" && chars[j + 1] == "}" { found = true; break }
                    j += 1
                }
                guard found else {
                    throw TemplateError(message: "'${{' is never closed with '}}'", offset: start)
                }
                let name = String(chars[(i + 3)..<j]).trimmingWhitespace()
                guard Template.isValidName(name) else {
                    throw TemplateError(message: "'\(name)' is not a variable name (letters, digits, '_' and '-')", offset: start)
                }
                if !text.isEmpty { parts.append(.text(text)); text = "" }
                parts.append(.variable(name, offset: start))
                i = j + 2
            } else {
                text.append(chars[i])
                i += 1
            }
        }
        if !text.isEmpty { parts.append(.text(text)) }
        self.parts = parts
    }

    /// The names referenced, in order of appearance.
    public var variables: [String] {
        parts.compactMap { if case .variable(let name, _) = $0 { return name } else { return nil } }
    }

    /// True for a variable name: an ASCII letter or `_`, then ASCII letters, digits, `_` and `-`.
    ///
    /// ASCII only, because every variable is also exported as an environment variable.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLetter || first == "_" else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
    }

    /// Substitutes every reference with its value as plain text; references missing from `values` are kept.
    public func render(_ values: [String: String]) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .text(let text): out += text
            case .variable(let name, _): out += values[name] ?? "${{ \(name) }}"
            }
        }
        return out
    }

    /// Substitutes every reference into a shell command so that each value stays data, byte for byte.
    ///
    /// The quoting follows the shell context where the reference stands (see `ShellContext`): bare, or inside
    /// `$( )` or backticks, it becomes a single-quoted word; inside "..." the characters special there are
    /// backslash-escaped; inside '...' each `'` is closed, escaped and reopened; in a here-document body `$`,
    /// backticks and backslashes are escaped. A value can therefore never end a quote early and run as code.
    /// A backslash written just before a reference has no effect on the value. Where the shell cannot carry a
    /// value exactly, it is changed rather than run: in arithmetic anything but a whole number becomes a syntax
    /// error, in a comment newlines become spaces, and in a quoted here-document a line equal to the
    /// delimiter gets a leading space.
    /// A reference after a `\'` inside bash's `$'...'` is refused: bash and dash read the rest of the line
    /// differently there, so no quoting is safe in both.
    public func renderShell(_ values: [String: String]) throws(TemplateError) -> String {
        try renderShell(values, arguments: nil)
    }
}

extension Template {
    /// The error for a reference after a `\'` inside `$'...'`, where bash and dash read the rest differently.
    static func ambiguousPlacement(_ name: String, _ offset: Int) -> TemplateError {
        TemplateError(message: "'${{ \(name) }}' follows a \\' inside $'...', which bash reads as an escaped quote and dash as the end of the string, so no quoting keeps the value data in both; write that string in \"...\" instead", offset: offset)
    }
}

/// A malformed `${{ }}` reference.
public struct TemplateError: Error, Sendable {
    /// What is wrong.
    public var message: String
    /// The 0-based character offset of the reference in the raw string.
    public var offset: Int
}

/// Quotes `value` as one POSIX shell word that stands for exactly its bytes.
public func shellQuote(_ value: String) -> String {
    if !value.isEmpty, value.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0)) }) {
        return value
    }
    return "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

extension String {
    /// The string without leading and trailing spaces and tabs.
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" { s = s.dropLast() }
        return String(s)
    }
}
