/// Follows POSIX shell text character by character, to know how a value written next must be quoted.
///
/// It tracks what changes the meaning of inserted text: quotes, backslashes, `$( )` command substitutions (a
/// fresh command, even inside a double-quoted string), backtick substitutions (read by a nested context after
/// the shell's own unescaping), arithmetic, comments, here-documents, `case` patterns (whose `)` does not end a
/// `$( )`), and bash's `<<<` here-strings and `$'...'` strings (where `/bin/sh` is bash, as on RHEL and macOS).
/// `Template.renderShell` feeds it everything it writes, its own quoted values included, so that its view of the
/// text stays the shell's.
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

    /// Where a `case` command stands in its grammar.
    enum CaseStage: Sendable, Equatable {
        /// After `case`: its word (once `seen`), then `in`.
        case subject(seen: Bool)
        /// Reading patterns up to the `)` that ends them (`started` once a pattern word was read).
        case patterns(started: Bool)
        /// The commands of one branch, up to `;;` (or bash's `;&`) or `esac`.
        case body
    }

    /// The state of a list of commands: the top level, a `$( )`, or a backtick substitution's text.
    struct Commands: Sendable {
        /// `)` for a `$( )`, nil at the top level.
        var closer: Character?
        /// The `(` still open in it (subshells, function definitions).
        var parens = 0
        /// A word is being read.
        var inWord = false
        /// The text of the word being read, or nil once it holds a quote, `$` or backslash (then it cannot be a
        /// reserved word).
        var word: String? = ""
        /// The next word is the first of a command, where `case`, `esac` and the like are reserved words.
        var atStart = true
        /// The `case` commands open here, innermost last.
        var cases: [CaseStage] = []

        init(closer: Character?) { self.closer = closer }
    }

    /// One level of nesting.
    enum Frame: Sendable {
        /// Commands: the top level or a `$( )`.
        case command(Commands)
        /// A backtick substitution: its text, once unescaped, is read by `inner`. `quoted` when it stands
        /// inside "...", where `\"` is unescaped too.
        case backtick(inner: ShellContext, quoted: Bool)
        /// Inside `$(( ))` or `(( ))` (a nested subshell to dash), up to the first unmatched `)`.
        case arithmetic(parens: Int)
        /// Inside '...'.
        case single
        /// Inside bash's `$'...'`, where a backslash escapes the next character (`escaped`: one just did).
        case ansiC(escaped: Bool)
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
    private(set) var frames: [Frame] = [.command(Commands(closer: nil))]
    /// A `\'` was read inside `$'...'`: bash reads the string as still open there and dash (which has no `$'...'`)
    /// as closed, so from here on no quoting is right for both, and nothing more can be inserted.
    private(set) var ambiguous = false
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
            let literal = advance(ch)
            // An escaped character starts nothing: `\$(` is no substitution, `\ #` no comment.
            previous = literal ? "\u{1}" : ch
            if ch == "\n" { line = "" } else { line.append(ch) }
        }
    }

    /// Advances over one character; true when it was taken literally (escaped by a backslash).
    private mutating func advance(_ ch: Character) -> Bool {
        if ch == "\n", endsHeredoc() { return false }
        if case .backtick(var inner, let quoted) = current {
            // The shell finds the end of a backtick substitution first, then reads its text with `\\`, `\``,
            // `\$` (and `\"` inside "...") unescaped.
            if backtickBackslash {
                backtickBackslash = false
                let unescapes = ch == "`" || ch == "$" || ch == "\\" || (quoted && ch == "\"")
                inner.advance(over: unescapes ? String(ch) : "\\" + String(ch))
            } else if ch == "\\" {
                backtickBackslash = true
                return false
            } else if ch == "`" {
                frames.removeLast()
                if case .command(var c) = current {
                    c.inWord = true
                    c.word = nil
                    frames[frames.count - 1] = .command(c)
                }
                return false
            } else {
                inner.advance(over: String(ch))
            }
            if inner.ambiguous { ambiguous = true }
            frames[frames.count - 1] = .backtick(inner: inner, quoted: quoted)
            return false
        }
        if readsHeredocOperator(ch) { return false }
        if escaped {
            escaped = false
            // A backslash-newline is removed before words are read (`ca\<newline>se` is `case`); any other escaped
            // character makes its word a quoted one.
            if ch != "\n", case .command(var c) = current {
                c.inWord = true
                c.word = nil
                frames[frames.count - 1] = .command(c)
            }
            return true
        }
        switch current {
        case .command(var c):
            // Taken out of the stack while it changes, so that its word is not copied on every character.
            frames[frames.count - 1] = .comment
            command(ch, &c)
        case .arithmetic(let parens):
            switch ch {
            case "\\": escaped = true
            case "'": frames.append(.single)
            case "\"": frames.append(.double)
            case "`": frames.append(.backtick(inner: ShellContext(), quoted: false))
            case "(" where previous == "$": frames.append(.command(Commands(closer: ")")))
            case "(": frames[frames.count - 1] = .arithmetic(parens: parens + 1)
            case ")" where parens > 0: frames[frames.count - 1] = .arithmetic(parens: parens - 1)
            case ")": frames.removeLast()
            default: break
            }
        case .single:
            if ch == "'" { frames.removeLast() }
        case .ansiC(let wasEscaped):
            if wasEscaped {
                if ch == "'" { ambiguous = true }
                frames[frames.count - 1] = .ansiC(escaped: false)
            } else if ch == "\\" {
                frames[frames.count - 1] = .ansiC(escaped: true)
            } else if ch == "'" {
                frames.removeLast()
            }
        case .double:
            expanding(ch, quoted: true)
        case .comment:
            if ch == "\n" {
                frames.removeLast()
                if case .command(var c) = current {
                    c.atStart = true
                    frames[frames.count - 1] = .command(c)
                }
                startHeredocs()
            }
        case .heredoc(let h):
            if h.expands { expanding(ch, quoted: false) }
        case .backtick:
            break  // handled above
        }
        return false
    }

    /// One unescaped character of a list of commands `c` (the innermost frame), which it updates.
    private mutating func command(_ ch: Character, _ c: inout Commands) {
        let index = frames.count - 1
        // A word ends at a blank or an operator character; what ends it is handled after it.
        if ch == " " || ch == "\t" || ch == "\n" || ";&|()<>".contains(ch) {
            // `$(` and `$((` belong to the word they stand in.
            if !(ch == "(" && previous == "$") { finishWord(&c) }
        } else if ch == "#" && !c.inWord {
            frames[index] = .command(c)
            frames.append(.comment)
            return
        } else if ch != "\\" {
            // A backslash marks its word once the next character shows it is not a line continuation.
            c.inWord = true
            if "'\"`$".contains(ch) { c.word = nil } else { c.word?.append(ch) }
        }
        let stage = c.cases.last
        switch ch {
        case "\\":
            escaped = true
        case "'" where previous == "$":
            frames[index] = .command(c)
            frames.append(.ansiC(escaped: false))
            return
        case "'":
            frames[index] = .command(c)
            frames.append(.single)
            return
        case "\"":
            frames[index] = .command(c)
            frames.append(.double)
            return
        case "`":
            frames[index] = .command(c)
            frames.append(.backtick(inner: ShellContext(), quoted: false))
            return
        case "(" where previous == "(" && !isCasePattern(stage):
            frames[index] = .command(c)
            frames.append(.arithmetic(parens: 0))
            return
        case "(" where previous == "$":
            frames[index] = .command(c)
            frames.append(.command(Commands(closer: ")")))
            return
        case "(" where stage == .patterns(started: false):
            break  // the optional `(` before a pattern
        case "(":
            c.parens += 1
            c.atStart = true
        case ")" where isCasePattern(stage):
            c.cases[c.cases.count - 1] = .body
            c.atStart = true
        case ")" where c.parens > 0:
            c.parens -= 1
        case ")" where c.closer == ")":
            frames.removeLast()
            return
        case ";" where previous == ";" && stage == .body:
            c.cases[c.cases.count - 1] = .patterns(started: false)
        case "&" where previous == ";" && stage == .body:
            c.cases[c.cases.count - 1] = .patterns(started: false)  // bash's `;&`
        case "&" where previous == ";" && stage == .patterns(started: false):
            break  // bash's `;;&`
        case "|" where isCasePattern(stage):
            break  // `a|b)`: another pattern
        case ";", "&", "|":
            c.atStart = true
        case "\n":
            c.atStart = true
            frames[index] = .command(c)
            startHeredocs()
            return
        case "<" where previous == "<":
            c.atStart = false
            heredocOperator = .afterOperator(stripsTabs: false)
        case "<", ">":
            c.atStart = false
        default:
            break
        }
        frames[index] = .command(c)
    }

    private func isCasePattern(_ stage: CaseStage?) -> Bool {
        if case .patterns = stage { return true }
        return false
    }

    /// Reserved words after which the next word is still the first of a command.
    private static let leadingReservedWords: Set<String> = ["!", "{", "do", "then", "else", "elif", "if", "while", "until", "time"]

    /// Ends the word being read in `c`, following `case ... in ... ) ... ;; ... esac` by its reserved words.
    private func finishWord(_ c: inout Commands) {
        guard c.inWord else { return }
        let word = c.word
        let wasStart = c.atStart
        c.inWord = false
        c.word = ""
        c.atStart = false
        switch c.cases.last {
        case .subject(let seen)?:
            c.cases[c.cases.count - 1] = seen && word == "in" ? .patterns(started: false) : .subject(seen: true)
            return
        case .patterns(let started)?:
            if !started, word == "esac" {
                c.cases.removeLast()
            } else {
                c.cases[c.cases.count - 1] = .patterns(started: true)
            }
            return
        default:
            break
        }
        guard wasStart, let word else { return }
        if word == "case" {
            c.cases.append(.subject(seen: false))
        } else if word == "esac", c.cases.last == .body {
            c.cases.removeLast()
        } else if Self.leadingReservedWords.contains(word) {
            c.atStart = true
        }
    }

    /// A character where `$`, backticks and backslashes are active: in "..." and in expanding here-documents.
    private mutating func expanding(_ ch: Character, quoted: Bool) {
        switch ch {
        case "\\": escaped = true
        case "`": frames.append(.backtick(inner: ShellContext(), quoted: quoted))
        case "(" where previous == "$": frames.append(.command(Commands(closer: ")")))
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
            if ch == "<", !strips, previous == "<" {
                // bash's `<<<`: a here-string, whose word is an ordinary word, not a delimiter.
                heredocOperator = .idle
                return true
            }
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
    /// The text to write so that, placed at the end of the text so far, the shell reads exactly `value`; nil where
    /// no text is read the same by bash and dash (after a `\'` inside `$'...'`, see `ambiguous`).
    func insertion(for value: String) -> String? {
        guard !ambiguous else { return nil }
        let text: String
        if case .backtick(var inner, _) = current {
            var prefix = ""
            if backtickBackslash {
                // The backslash escapes nothing special before a space, so it stays a plain character.
                prefix = " "
                inner.advance(over: "\\ ")
            }
            guard let innerText = inner.insertion(for: value) else { return nil }
            text = prefix + Self.escaping(innerText, "`\\")
        } else if escaped {
            // A backslash just before would escape the value's first character, or the quote opened for it;
            // a newline after it is a line continuation, which the shell removes together with the backslash.
            var after = self
            after.advance(over: "\n")
            text = "\n" + after.quote(value)
        } else {
            text = quote(value)
        }
        return guardingOpenHeredocs(text)
    }

    /// Changes any line of `text` that would read as the delimiter of a here-document whose body it stands in, at
    /// any depth: the shell collects a body line by line before reading anything in it, so a line `EOF` of a value
    /// quoted inside a `$( )` inside the body still ends the body, and what follows would run. Where the value is
    /// quoted, an empty `''` or `""` at the start of the line hides it without changing a byte of the value.
    private func guardingOpenHeredocs(_ text: String) -> String {
        var delimiters: [Heredoc] = []
        for frame in frames { if case .heredoc(let h) = frame { delimiters.append(h) } }
        guard !delimiters.isEmpty, text.contains("\n") || !line.isEmpty else { return text }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for i in lines.indices {
            let full = (i == 0 ? line : "") + lines[i]
            if delimiters.contains(where: { (($0.stripsTabs ? String(full.drop { $0 == "\t" }) : full) == $0.delimiter) }) {
                lines[i] = lineBreaker + lines[i]
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Text that reads as nothing at the start of a line of a value inserted in the innermost frame.
    private var lineBreaker: String {
        switch current {
        case .command, .single, .ansiC, .arithmetic, .comment: return "''"
        case .double: return "\"\""
        case .heredoc(let h): return h.expands ? "${-+}" : " "
        case .backtick(let inner, _): return inner.lineBreaker
        }
    }

    /// `value` quoted for the innermost frame, with no backslash pending.
    private func quote(_ value: String) -> String {
        var text: String
        switch current {
        case .command(let c):
            if !c.inWord, c.atStart || (c.cases.last.map { $0 != .body } ?? false) {
                // Where a bare word could be a reserved word (`case`, `esac`, `{`) or an assignment, it is quoted
                // even when it needs no quoting otherwise.
                text = "'" + value.replacingOccurrences(of: "'", with: "'\\''") + "'"
            } else {
                text = shellQuote(value)
            }
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
        case .ansiC(let escaped):
            // bash's `$'...'` is closed (a pending backslash first given a backslash to escape), the value goes in
            // as a quoted word, and a new `$'` reopens it. dash, which reads `$'` as `$` and an ordinary '...',
            // closes and reopens at the same places, so both read the value byte for byte.
            text = (escaped ? "\\'" : "'") + shellQuote(value) + "$'"
        case .double:
            text = Self.escaping(value, "$`\"\\")
        case .heredoc(let h):
            text = h.expands ? Self.escaping(value, "$`\\") : value
            text = guardingDelimiter(text, of: h)
        case .backtick:
            text = ""  // not reached: `insertion(for:)` handles a backtick substitution before calling this
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
