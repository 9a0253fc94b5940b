/// Follows POSIX shell text character by character, to know how a value written next must be quoted.
///
/// It tracks what changes the meaning of inserted text: quotes, backslashes, `$( )` command substitutions (a
/// fresh command, even inside a double-quoted string), backtick substitutions (read by a nested context after
/// the shell's own unescaping), arithmetic, comments and here-documents. `Template.renderShell` feeds it
/// everything it writes, its own quoted values included, so that its view of the text stays the shell's.
/// It does not parse `case` patterns: a pattern's `)` inside `$( )` ends the substitution early.
struct ShellContext: Sendable {
    /// A here-document whose body is being read or is due after the next newline.
    struct Heredoc: Sendable {
        /// The line that ends the body.
        var delimiter: String
        /// `<<-`: leading tabs are stripped from each line before comparing it with the delimiter.
        var stripsTabs: Bool
        /// False when the delimiter was quoted: then the body is taken literally.
        var expands: Bool
    }

    /// One level of nesting.
    enum Frame: Sendable {
        /// Commands: the top level or a `$( )` (then `closer` is `)`); `parens` counts the `(` still open in it.
        case command(closer: Character?, parens: Int)
        /// A backtick substitution: its text, once unescaped, is read by `inner`. `quoted` when it stands
        /// inside "...", where `\"` is unescaped too.
        case backtick(inner: ShellContext, quoted: Bool)
        /// Inside `$(( ))` or `(( ))` (a nested subshell to dash), up to the first unmatched `)`.
        case arithmetic(parens: Int)
        /// Inside '...'.
        case single
        /// Inside "...".
        case double
        /// From a `#` that starts a word to the end of the line.
        case comment
        /// The body of a here-document.
        case heredoc(Heredoc)
    }

    /// Reading a here-document operator: `<<`, an optional `-`, blanks, then the delimiter word.
    private enum HeredocOperator: Sendable {
        case idle
        case afterOperator(stripsTabs: Bool)
        case word(text: String, quoted: Bool, quote: Character?, escaped: Bool, stripsTabs: Bool)
    }

    /// The open levels, outermost first; never empty.
    private(set) var frames: [Frame] = [.command(closer: nil, parens: 0)]
    /// The previous character was an active backslash, so the next one is taken literally.
    private(set) var escaped = false
    /// In a backtick substitution: a backslash was read, and the next character decides what it means.
    private(set) var backtickBackslash = false
    private var previous: Character?
    /// The text since the last newline.
    private(set) var line = ""
    private var pending: [Heredoc] = []
    private var heredocOperator = HeredocOperator.idle

    /// The innermost frame.
    var current: Frame { frames[frames.count - 1] }

    /// Advances over `text`.
    mutating func advance(over text: String) {
        for ch in text {
            advance(ch)
            previous = ch
            if ch == "\n" { line = "" } else { line.append(ch) }
        }
    }

    private mutating func advance(_ ch: Character) {
        if ch == "\n", endsHeredoc() { return }
        if case .backtick(var inner, let quoted) = current {
            // The shell finds the end of a backtick substitution first, then reads its text with `\\`, `\``,
            // `\$` (and `\"` inside "...") unescaped.
            if backtickBackslash {
                backtickBackslash = false
                let unescapes = ch == "`" || ch == "$" || ch == "\\" || (quoted && ch == "\"")
                inner.advance(over: unescapes ? String(ch) : "\\" + String(ch))
            } else if ch == "\\" {
                backtickBackslash = true
                return
            } else if ch == "`" {
                frames.removeLast()
                return
            } else {
                inner.advance(over: String(ch))
            }
            frames[frames.count - 1] = .backtick(inner: inner, quoted: quoted)
            return
        }
        if readsHeredocOperator(ch) { return }
        if escaped {
            escaped = false
            return
        }
        switch current {
        case .command(let closer, let parens):
            switch ch {
            case "\\": escaped = true
            case "'": frames.append(.single)
            case "\"": frames.append(.double)
            case "`": frames.append(.backtick(inner: ShellContext(), quoted: false))
            case "(" where previous == "(": frames.append(.arithmetic(parens: 0))
            case "(" where previous == "$": frames.append(.command(closer: ")", parens: 0))
            case "(": frames[frames.count - 1] = .command(closer: closer, parens: parens + 1)
            case ")" where parens > 0: frames[frames.count - 1] = .command(closer: closer, parens: parens - 1)
            case ")" where closer == ")": frames.removeLast()
            case "#" where previous.map(Self.separatesWords) ?? true: frames.append(.comment)
            case "<" where previous == "<": heredocOperator = .afterOperator(stripsTabs: false)
            case "\n": startHeredocs()
            default: break
            }
        case .arithmetic(let parens):
            switch ch {
            case "\\": escaped = true
            case "'": frames.append(.single)
            case "\"": frames.append(.double)
            case "`": frames.append(.backtick(inner: ShellContext(), quoted: false))
            case "(" where previous == "$": frames.append(.command(closer: ")", parens: 0))
            case "(": frames[frames.count - 1] = .arithmetic(parens: parens + 1)
            case ")" where parens > 0: frames[frames.count - 1] = .arithmetic(parens: parens - 1)
            case ")": frames.removeLast()
            default: break
            }
        case .single:
            if ch == "'" { frames.removeLast() }
        case .double:
            expanding(ch, quoted: true)
        case .comment:
            if ch == "\n" {
                frames.removeLast()
                startHeredocs()
            }
        case .heredoc(let h):
            if h.expands { expanding(ch, quoted: false) }
        case .backtick:
            break  // handled above
        }
    }

    /// A character where `$`, backticks and backslashes are active: in "..." and in expanding here-documents.
    private mutating func expanding(_ ch: Character, quoted: Bool) {
        switch ch {
        case "\\": escaped = true
        case "`": frames.append(.backtick(inner: ShellContext(), quoted: quoted))
        case "(" where previous == "$": frames.append(.command(closer: ")", parens: 0))
        case "\"" where quoted: frames.removeLast()
        default: break
        }
    }

    /// At the newline that ends a command line, the bodies of the here-documents opened on it begin.
    private mutating func startHeredocs() {
        guard case .command = current, !pending.isEmpty else { return }
        // The bodies follow in the order the operators were written, so the first one due goes on top.
        frames += pending.reversed().map(Frame.heredoc)
        pending = []
    }

    /// At a newline inside a here-document body: true, and the body is closed, when the line is its delimiter.
    ///
    /// The shell reads the body line by line before expanding anything, so this holds inside nested quotes too.
    private mutating func endsHeredoc() -> Bool {
        guard let index = frames.lastIndex(where: { if case .heredoc = $0 { true } else { false } }),
              case .heredoc(let h) = frames[index] else { return false }
        let text = h.stripsTabs ? String(line.drop { $0 == "\t" }) : line
        guard text == h.delimiter else { return false }
        frames.removeSubrange(index...)
        escaped = false
        backtickBackslash = false
        return true
    }

    /// Reads the `-` and the delimiter word after `<<`; true while the character belongs to the operator.
    private mutating func readsHeredocOperator(_ ch: Character) -> Bool {
        switch heredocOperator {
        case .idle:
            return false
        case .afterOperator(let strips):
            if ch == "-", !strips, previous == "<" {
                heredocOperator = .afterOperator(stripsTabs: true)
                return true
            }
            if ch == " " || ch == "\t" { return true }
            if Self.separatesWords(ch) {
                heredocOperator = .idle  // no delimiter: a syntax error, which the shell reports itself
                return false
            }
            heredocOperator = .word(text: "", quoted: false, quote: nil, escaped: false, stripsTabs: strips)
            return readsHeredocOperator(ch)
        case .word(var text, var quoted, var quote, let escaped, let strips):
            var escapes = false
            if escaped {
                text.append(ch)
            } else if let q = quote {
                if ch == q { quote = nil } else if ch == "\\", q == "\"" { escapes = true } else { text.append(ch) }
            } else if ch == "'" || ch == "\"" {
                quote = ch
                quoted = true
            } else if ch == "\\" {
                escapes = true
                quoted = true
            } else if Self.separatesWords(ch) {
                pending.append(Heredoc(delimiter: text, stripsTabs: strips, expands: !quoted))
                heredocOperator = .idle
                return false
            } else {
                text.append(ch)
            }
            heredocOperator = .word(text: text, quoted: quoted, quote: quote, escaped: escapes, stripsTabs: strips)
            return true
        }
    }

    /// True for a character after which a `#` starts a comment, and that ends a here-document delimiter.
    private static func separatesWords(_ ch: Character) -> Bool {
        ch == " " || ch == "\t" || ch == "\n" || ch == "`" || ";&|()<>".contains(ch)
    }
}

extension ShellContext {
    /// The text to write so that, placed at the end of the text so far, the shell reads exactly `value`.
    func insertion(for value: String) -> String {
        if case .backtick(var inner, _) = current {
            var prefix = ""
            if backtickBackslash {
                // The backslash escapes nothing special before a space, so it stays a plain character.
                prefix = " "
                inner.advance(over: "\\ ")
            }
            return prefix + Self.escaping(inner.insertion(for: value), "`\\")
        }
        if escaped {
            // A backslash just before would escape the value's first character, or the quote opened for it;
            // a newline after it is a line continuation, which the shell removes together with the backslash.
            var after = self
            after.advance(over: "\n")
            return "\n" + after.quote(value)
        }
        return quote(value)
    }

    /// `value` quoted for the innermost frame, with no backslash pending.
    private func quote(_ value: String) -> String {
        var text: String
        switch current {
        case .command:
            text = shellQuote(value)
        case .arithmetic:
            // Arithmetic expands `$( )` even inside single quotes, and bash's `((` is a subshell to dash, so
            // only a whole number goes in as written. Anything else becomes an inert word that starts with
            // '@', which both shells refuse as an operand before evaluating any of it.
            let digits = value.first == "-" || value.first == "+" ? value.dropFirst() : Substring(value)
            if !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }) {
                text = value
            } else {
                text = "@" + shellQuote(Self.escaping(value, "$`\\"))
            }
        case .comment:
            // Only a newline matters in a comment; quoting too keeps the value data if the comment was misjudged.
            text = shellQuote(value.replacingOccurrences(of: "\n", with: " "))
        case .single:
            text = value.replacingOccurrences(of: "'", with: "'\\''")
        case .double:
            text = Self.escaping(value, "$`\"\\")
        case .heredoc(let h):
            text = h.expands ? Self.escaping(value, "$`\\") : value
            text = guardingDelimiter(text, of: h)
        case .backtick:
            text = insertion(for: value)
        }
        return text
    }

    /// Changes any line of the value that would read as the here-document's delimiter, which would close the
    /// body early and run the rest of the value as commands. In an expanding body an empty `${-+}` does it
    /// invisibly; a literal body cannot hide anything, so there the line gets a leading space.
    private func guardingDelimiter(_ text: String, of h: Heredoc) -> String {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for i in lines.indices {
            let full = (i == 0 ? line : "") + lines[i]
            if !lines[i].isEmpty, (h.stripsTabs ? String(full.drop { $0 == "\t" }) : full) == h.delimiter {
                lines[i] = (h.expands ? "${-+}" : " ") + lines[i]
            }
        }
        return lines.joined(separator: "\n")
    }

    private static func escaping(_ text: String, _ special: String) -> String {
        var out = ""
        for ch in text {
            if special.contains(ch) { out.append("\\") }
            out.append(ch)
        }
        return out
    }
}
