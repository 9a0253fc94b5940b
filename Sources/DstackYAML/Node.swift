/// A 1-based position in a source file.
public struct Mark: Sendable, Hashable, CustomStringConvertible {
    /// The 1-based line number.
    public var line: Int
    /// The 1-based column number, counted in characters.
    public var column: Int

    /// Creates a mark at `line`:`column` (both 1-based).
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A YAML document reduced to what configuration files need: scalars, sequences and mappings, each with the
/// position it starts at.
public struct Node: Sendable {
    /// The shape of a node and its content.
    public enum Kind: Sendable {
        /// A scalar; `isPlain` is false when it was quoted or a block literal (so `"1"` stays a string).
        case scalar(String, isPlain: Bool)
        /// A sequence of nodes.
        case sequence([Node])
        /// A mapping, in source order, with its keys as nodes so errors can point at them.
        case mapping([(key: Node, value: Node)])
    }

    /// What this node holds.
    public var kind: Kind
    /// Where this node starts.
    public var mark: Mark

    /// Creates a node of `kind` starting at `mark`.
    public init(_ kind: Kind, at mark: Mark) {
        self.kind = kind
        self.mark = mark
    }

    /// The scalar's text, or nil for a collection.
    public var scalar: String? {
        if case .scalar(let text, _) = kind { return text }
        return nil
    }

    /// True for a plain scalar that YAML reads as null (`~`, `null`, empty).
    public var isNull: Bool {
        if case .scalar(let text, true) = kind { return ["", "~", "null", "Null", "NULL"].contains(text) }
        return false
    }

    /// The items of a sequence, or nil.
    public var sequence: [Node]? {
        if case .sequence(let items) = kind { return items }
        return nil
    }

    /// The pairs of a mapping, or nil.
    public var mapping: [(key: Node, value: Node)]? {
        if case .mapping(let pairs) = kind { return pairs }
        return nil
    }

    /// A word for the node's type as a person would say it: "a string", "a list", "a mapping".
    public var typeDescription: String {
        switch kind {
        case .scalar(let text, let plain):
            if isNull { return "null" }
            if plain, Int(text) != nil { return "a number" }
            if plain, ["true", "false", "yes", "no"].contains(text.lowercased()) { return "a boolean" }
            return "a string"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }
}
