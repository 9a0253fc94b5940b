/// Early dstack's `$name` references, read as `${{ name }}` where `name` is a declared variable.
///
/// Projects written for early dstack say `python train.py --model $model $variables_as_args`. The shell would
/// expand `$model` to nothing (variables are exported upper case), so a `$name` or `${name}` whose name is declared
/// is substituted by dstack, quoted exactly as `${{ name }}` would be; any other `$NAME` (`$HOME`, `$1`, `$PATH`)
/// is left to the shell. In commands only the places where the shell itself expands `$` count: not inside '...',
/// after a backslash, in a comment or in a quoted here-document, where the shell keeps `$model` as written.
extension Template {
    /// The builtin that expands to every variable a workflow sees, as `--name value` pairs.
    public static let argumentsVariable = "variables_as_args"

    /// Parses `raw` like `init(_:)`, and also takes `$name` and `${name}` as references when `name` is in
    /// `declared`; with `shell`, only where a POSIX shell would expand them.
    public init(_ raw: String, declared: Set<String>, shell: Bool) throws(TemplateError) {
        try self.init(raw)
        guard !declared.isEmpty, raw.contains("$") else { return }
        let chars = Array(raw)
        var context = ShellContext()
        var parts: [Part] = []
        var position = 0  // where the current part starts in `raw`
        for part in self.parts {
            switch part {
            case .variable(_, let offset):
                // The reference runs from its `$` to the first `}}` after `${{`.
                var end = offset + 3
                while end + 1 < chars.count, !(chars[end] == "}" && chars[end + 1] == "}") { end += 1 }
                end = min(end + 2, chars.count)
                if shell { context.advance(over: String(chars[offset..<end])) }
                parts.append(part)
                position = end
            case .text(let text):
                Self.splitDollars(Array(text), start: position, declared: declared,
                                  context: shell ? context : nil, into: &parts)
                if shell { context.advance(over: text) }
                position += text.count
            }
        }
        self.parts = parts
    }

    /// Appends `text` (starting at offset `start` of the raw string) as text and `$name` references.
    private static func splitDollars(_ text: [Character], start: Int, declared: Set<String>, context: ShellContext?,
                                     into parts: inout [Part]) {
        var context = context
        var literal = ""
        var i = 0
        func flush() {
            if !literal.isEmpty { parts.append(.text(literal)); literal = "" }
        }
        while i < text.count {
            if text[i] == "$", context.map(Self.expandsDollar) ?? true,
               let (name, length) = reference(in: text, at: i, declared: declared) {
                flush()
                parts.append(.variable(name, offset: start + i))
                // The shell reads a value put here as one word, whatever follows: keep the context in step.
                context?.advance(over: "''")
                i += length
                continue
            }
            if text[i] == "$", i + 1 < text.count, text[i + 1] == "$" {
                // `$$` is the shell's process id: its second `$` starts nothing.
                literal += "$$"
                context?.advance(over: "$$")
                i += 2
                continue
            }
            literal.append(text[i])
            context?.advance(over: String(text[i]))
            i += 1
        }
        flush()
    }

    /// The declared name referenced by the `$` at `i`, and the length of the reference; nil when there is none.
    ///
    /// `${name}` must close at once. For `$name`, the longest run of name characters is taken when it is declared
    /// (`$batch-size`), else the longest declared prefix that ends before a '-', down to the shell's own name
    /// (letters, digits and `_`): `$lr-decay` is `$lr` then `-decay`.
    private static func reference(in text: [Character], at i: Int, declared: Set<String>) -> (String, Int)? {
        guard i + 1 < text.count else { return nil }
        if text[i + 1] == "{" {
            guard let close = text[(i + 2)...].firstIndex(of: "}") else { return nil }
            let name = String(text[(i + 2)..<close])
            return declared.contains(name) ? (name, close - i + 1) : nil
        }
        let first = text[i + 1]
        guard first.isASCII, first.isLetter || first == "_" else { return nil }
        var end = i + 1
        while end < text.count, text[end].isASCII, text[end].isLetter || text[end].isNumber || text[end] == "_" || text[end] == "-" {
            end += 1
        }
        while end > i + 1 {
            let name = String(text[(i + 1)..<end])
            if declared.contains(name) { return (name, end - i) }
            // Back off a '-' at a time, down to the shell's own name.
            guard let dash = text[(i + 1)..<end].lastIndex(of: "-") else { return nil }
            end = dash
        }
        return nil
    }

    /// True where the shell would expand a `$` written next.
    private static func expandsDollar(_ context: ShellContext) -> Bool {
        if context.escaped { return false }
        switch context.current {
        case .command, .arithmetic, .double: return true
        case .heredoc(let h): return h.expands
        case .single, .ansiC, .comment: return false
        case .backtick(let inner, _): return !context.backtickBackslash && expandsDollar(inner)
        }
    }

    /// Substitutes every reference into a shell command like `renderShell(_:)`; `variables_as_args` becomes
    /// `--name value` for each of `arguments`, each value quoted for where it lands (without `arguments`, it is a
    /// variable like any other).
    public func renderShell(_ values: [String: String], arguments: [(name: String, value: String)]?) throws(TemplateError) -> String {
        var out = ""
        var context = ShellContext()
        func write(_ text: String) {
            out += text
            context.advance(over: text)
        }
        for part in parts {
            switch part {
            case .text(let text):
                write(text)
            case .variable(Self.argumentsVariable, let offset) where arguments != nil:
                for (index, pair) in (arguments ?? []).enumerated() {
                    // Names hold only letters, digits, '_' and '-': safe as written in every context.
                    write((index == 0 ? "" : " ") + "--" + pair.name + " ")
                    guard let text = context.insertion(for: pair.value) else { throw Self.ambiguousPlacement(Self.argumentsVariable, offset) }
                    write(text)
                }
            case .variable(let name, let offset):
                guard let value = values[name] else { write("${{ \(name) }}"); continue }
                guard let text = context.insertion(for: value) else { throw Self.ambiguousPlacement(name, offset) }
                write(text)
            }
        }
        return out
    }

    /// The `--name value` words of `variables_as_args` as plain text, for values that never reach a shell.
    public static func argumentsText(_ arguments: [(name: String, value: String)]) -> String {
        arguments.map { "--\($0.name) \($0.value)" }.joined(separator: " ")
    }
}
