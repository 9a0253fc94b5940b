internal import CYAML

/// Reads YAML text into a `Node` tree through libyaml's event API.
///
/// Only the first document is read. Anchors and aliases are resolved by copying; merge keys are not supported.
/// Errors become `Diagnostic`s with 1-based positions and messages written for people.
public enum YAMLReader {
    /// Parses `source`; returns nil for an empty document.
    public static func parse(_ source: SourceFile) throws(Diagnostic) -> Node? {
        let parser = Parser(source)
        return try parser.document()
    }
}

/// Owns one `yaml_parser_t` for the lifetime of one parse.
private final class Parser {
    /// The deepest nesting of lists and mappings read; deeper is an error, not a stack overflow (a file nested
    /// 300,000 levels deep crashed the reader, which recurses once per level). dstack's own files need about six.
    static let maximumDepth = 256

    private var parser = yaml_parser_t()
    private let source: SourceFile
    /// The UTF-8 text, owned here because libyaml keeps a pointer to it for the whole parse.
    private let input: UnsafeMutableBufferPointer<UInt8>
    /// The length of `input` in bytes.
    private let count: Int
    private var anchors: [String: Node] = [:]
    /// The flow collections (`[` or `{`) open at the current event, innermost last, for "unclosed" errors.
    private var openFlows: [(mark: Mark, opener: Character)] = []

    init(_ source: SourceFile) {
        self.source = source
        let utf8 = Array(source.text.utf8)
        count = utf8.count
        input = .allocate(capacity: max(1, utf8.count))
        _ = input.initialize(from: utf8)
        yaml_parser_initialize(&parser)
        yaml_parser_set_input_string(&parser, input.baseAddress, utf8.count)
    }

    deinit {
        yaml_parser_delete(&parser)
        input.deallocate()
    }

    func document() throws(Diagnostic) -> Node? {
        var root: Node?
        loop: while true {
            var event = try next()
            defer { yaml_event_delete(&event) }
            switch event.type {
            case YAML_STREAM_START_EVENT, YAML_DOCUMENT_START_EVENT:
                continue
            case YAML_DOCUMENT_END_EVENT:
                // A second document would be silently ignored otherwise; say so instead.
                var following = try next()
                defer { yaml_event_delete(&following) }
                if following.type == YAML_DOCUMENT_START_EVENT {
                    throw Diagnostic(source, mark(following.start_mark),
                                     "a second YAML document starts here; this file holds one, so remove the '---' line")
                }
                break loop
            case YAML_STREAM_END_EVENT:
                break loop
            default:
                root = try node(from: &event, depth: 1)
            }
        }
        return root
    }

    private func next() throws(Diagnostic) -> yaml_event_t {
        var event = yaml_event_t()
        if yaml_parser_parse(&parser, &event) == 0 {
            throw error()
        }
        return event
    }

    private func mark(_ m: yaml_mark_t) -> Mark {
        Mark(line: Int(m.line) + 1, column: Int(m.column) + 1)
    }

    private func node(from event: inout yaml_event_t, depth: Int) throws(Diagnostic) -> Node {
        let start = mark(event.start_mark)
        if depth > Self.maximumDepth {
            throw Diagnostic(source, start, "lists and mappings are nested more than \(Self.maximumDepth) levels deep here; no dstack file needs that many, so look for a long run of '[', '{' or '- '")
        }
        switch event.type {
        case YAML_SCALAR_EVENT:
            let s = event.data.scalar
            let text = string(s.value, count: s.length)
            if text.utf8.contains(0) {
                // Only an escape (\0, \x00, \u0000) can put one there: libyaml refuses the byte itself.
                throw Diagnostic(source, start, "this value holds a NUL character (written \\0, \\x00 or \\u0000); no command, file name or environment variable can carry one, so remove it")
            }
            let plain = s.style == YAML_PLAIN_SCALAR_STYLE
            let node = Node(.scalar(text, isPlain: plain), at: start)
            remember(s.anchor, node)
            return node
        case YAML_ALIAS_EVENT:
            let name = cString(event.data.alias.anchor)
            guard let target = anchors[name] else {
                throw Diagnostic(source, start, "unknown alias '*\(name)'; define '&\(name)' before using it")
            }
            return Node(target.kind, at: start)
        case YAML_SEQUENCE_START_EVENT:
            let anchor = event.data.sequence_start.anchor.map { cString($0) }
            let flow = event.data.sequence_start.style == YAML_FLOW_SEQUENCE_STYLE
            if flow { openFlows.append((start, "[")) }
            var items: [Node] = []
            while true {
                var child = try next()
                defer { yaml_event_delete(&child) }
                if child.type == YAML_SEQUENCE_END_EVENT { break }
                items.append(try node(from: &child, depth: depth + 1))
            }
            if flow { openFlows.removeLast() }
            let node = Node(.sequence(items), at: start)
            if let anchor { anchors[anchor] = node }
            return node
        case YAML_MAPPING_START_EVENT:
            let anchor = event.data.mapping_start.anchor.map { cString($0) }
            let flow = event.data.mapping_start.style == YAML_FLOW_MAPPING_STYLE
            if flow { openFlows.append((start, "{")) }
            var pairs: [(key: Node, value: Node)] = []
            while true {
                var keyEvent = try next()
                defer { yaml_event_delete(&keyEvent) }
                if keyEvent.type == YAML_MAPPING_END_EVENT { break }
                let key = try node(from: &keyEvent, depth: depth + 1)
                var valueEvent = try next()
                defer { yaml_event_delete(&valueEvent) }
                let value = try node(from: &valueEvent, depth: depth + 1)
                pairs.append((key, value))
            }
            if flow { openFlows.removeLast() }
            let node = Node(.mapping(pairs), at: start)
            if let anchor { anchors[anchor] = node }
            return node
        default:
            throw Diagnostic(source, start, "unexpected YAML event")
        }
    }

    private func remember(_ anchor: UnsafeMutablePointer<yaml_char_t>?, _ node: Node) {
        if let anchor { anchors[cString(anchor)] = node }
    }

    private func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?, count: Int) -> String {
        guard let pointer else { return "" }
        return String(decoding: UnsafeBufferPointer(start: pointer, count: count), as: UTF8.self)
    }

    private func cString(_ pointer: UnsafeMutablePointer<yaml_char_t>) -> String {
        String(cString: UnsafeRawPointer(pointer).assumingMemoryBound(to: CChar.self))
    }

    /// Turns libyaml's error state into a diagnostic that says what went wrong in plain words.
    private func error() -> Diagnostic {
        let problem = parser.problem.map { String(cString: $0) } ?? "invalid YAML"
        let context = parser.context.map { String(cString: $0) }
        let problemMark = mark(parser.problem_mark)
        let contextMark = mark(parser.context_mark)
        let line = source.line(problemMark.line).map(Array.init) ?? []
        let index = problemMark.column - 1
        let character: Character? = line.indices.contains(index) ? line[index] : nil
        let atLineStart = line.prefix(max(0, index)).allSatisfy { $0 == " " || $0 == "\t" }
        let atEnd = parser.problem_mark.index >= count

        if parser.error == YAML_READER_ERROR {
            return Diagnostic(source, Mark(line: 1, column: 1), "the file is not valid UTF-8 text (\(problem))")
        }
        if character == "\t" || problem.contains("tab character") {
            return Diagnostic(source, problemMark, "tab character used for indentation; YAML needs spaces")
        }
        if let context, context.contains("quoted scalar") {
            if problem.contains("unknown escape") {
                return Diagnostic(source, problemMark,
                                  "unknown escape sequence in a double-quoted string; write '\\\\' for a backslash, or use single quotes")
            }
            return Diagnostic(source, contextMark, "unclosed quote: this string has no closing quote")
        }
        if problem.hasPrefix("did not find expected"), let open = openFlows.last,
           atEnd || problemMark.line > open.mark.line {
            let closer = open.opener == "[" ? "]" : "}"
            let what = open.opener == "[" ? "list" : "mapping"
            return Diagnostic(source, open.mark, "unclosed '\(open.opener)': this \(what) has no closing '\(closer)'")
        }
        if problem.hasPrefix("did not find expected ','"), character == "{" || character == "}" {
            // Typically `[python x.py ${{ v }}]`: braces are flow syntax inside [...] and {...}.
            if index > 0, line[index - 1] == "$" {
                return Diagnostic(source, Mark(line: problemMark.line, column: problemMark.column - 1),
                                  "put this value in quotes: inside [...] or {...}, a '${{ }}' reference is only allowed in a quoted string")
            }
            return Diagnostic(source, problemMark,
                              "put this value in quotes: '{' and '}' are not allowed unquoted inside [...] or {...}")
        }
        switch problem {
        case "found unexpected ':'":
            return Diagnostic(source, problemMark, "unexpected ':' here; put the value in quotes if it holds ':'")
        case "found character that cannot start any token":
            let shown = character.map { "'\($0)'" } ?? "this character"
            return Diagnostic(source, problemMark, "\(shown) cannot start a plain value; put the value in quotes")
        case "could not find expected ':'":
            return Diagnostic(source, contextMark,
                              "this line is not a 'key: value' pair; add the ':', or indent the line further if it continues the value above")
        case "mapping values are not allowed in this context":
            // An earlier ': ' on the line means the colon is inside a value; otherwise the line is a key
            // indented so deep that it reads as the continuation of the value above.
            let before = String(line.prefix(max(0, index)))
            if before.contains(": ") {
                return Diagnostic(source, problemMark, "unexpected ':' inside a value; put the value in quotes if it holds ': '")
            }
            let first = line.firstIndex { $0 != " " } ?? 0
            return Diagnostic(source, Mark(line: problemMark.line, column: first + 1),
                              "bad indentation: this line is indented deeper than the key above it, so it reads as part of that value; align it with its siblings")
        case "did not find expected key" where atLineStart, "did not find expected '-' indicator" where atLineStart:
            let kind = problem.hasSuffix("key") ? "mapping" : "list"
            return Diagnostic(source, problemMark,
                              "bad indentation: this line does not line up with the keys above it; indent it like its siblings in the \(kind) that starts at line \(contextMark.line)")
        case "did not find expected key", "did not find expected '-' indicator":
            let shown = character.map { "'\($0)'" } ?? "text"
            return Diagnostic(source, problemMark, "unexpected \(shown) after the end of a value; put the whole value in quotes if it belongs to it")
        case "did not find expected ',' or ']'":
            return Diagnostic(source, problemMark, "expected ',' or ']' in this list; put an item in quotes if it holds ': ' or ', '")
        case "did not find expected ',' or '}'":
            return Diagnostic(source, problemMark, "expected ',' or '}' in this mapping; separate its entries with ', '")
        default:
            var message = "invalid YAML: \(problem)"
            if let context { message += " \(context) at line \(contextMark.line)" }
            return Diagnostic(source, problemMark, message)
        }
    }
}
