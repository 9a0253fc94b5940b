/// Reads a `Node` tree strictly against a schema, collecting diagnostics that point into one source file.
struct NodeReader {
    let source: SourceFile
    var diagnostics: [Diagnostic] = []

    init(_ source: SourceFile) {
        self.source = source
    }

    var file: String { source.displayName }

    mutating func error(_ mark: Mark, _ message: String) {
        diagnostics.append(Diagnostic(source, mark, message))
    }

    /// The pairs of a mapping keyed by name; reports non-mappings, non-string keys, duplicates and unknown keys.
    mutating func mapping(_ node: Node, what: String, allowed: [String]? = nil) -> [(name: String, key: Node, value: Node)]? {
        guard let pairs = node.mapping else {
            error(node.mark, "\(what) must be a mapping of 'key: value' lines, got \(node.typeDescription)")
            return nil
        }
        var seen: [String: Mark] = [:]
        var out: [(name: String, key: Node, value: Node)] = []
        for (key, value) in pairs {
            guard let name = key.scalar else {
                error(key.mark, "keys in \(what) must be plain names, got \(key.typeDescription)")
                continue
            }
            if let first = seen[name] {
                error(key.mark, "duplicate key '\(name)' in \(what) (first at line \(first.line))")
                continue
            }
            seen[name] = key.mark
            if let allowed, !allowed.contains(name) {
                error(key.mark, "unknown key '\(name)' in \(what)\(didYouMean(name, allowed))")
                continue
            }
            out.append((name, key, value))
        }
        return out
    }

    /// A scalar as a located string; reports collections and nulls.
    mutating func string(_ node: Node, what: String) -> Located<String>? {
        guard let text = node.scalar, !node.isNull else {
            error(node.mark, "\(what) must be a string, got \(node.typeDescription)")
            return nil
        }
        return Located(text, at: node.mark, in: file)
    }

    /// A list of strings; a single string is not accepted, so mistakes like `commands: python x.py` are caught.
    mutating func stringList(_ node: Node, what: String, allowEmpty: Bool = true) -> [Located<String>]? {
        guard let items = node.sequence else {
            if node.isNull, allowEmpty { return [] }
            let hint = node.scalar != nil ? " (write it as a list: '- item' lines or [a, b])" : ""
            error(node.mark, "\(what) must be a list of strings, got \(node.typeDescription)\(hint)")
            return nil
        }
        var out: [Located<String>] = []
        for item in items {
            if item.mapping?.count == 1 {
                // `- echo a: b` is a one-key mapping to YAML; the fix is quoting, so say that.
                error(item.mark, "each item of \(what) must be a string, got a mapping; put the item in quotes if it holds ': '")
            } else if let s = string(item, what: "each item of \(what)") {
                out.append(s)
            }
        }
        return out
    }
}
