/// Secret values by name, held in memory only: they are never encoded, and printing or reflecting them shows
/// names with `***`, so a value cannot reach a record, a log line or an error message by accident.
///
/// Deliberately not `Codable`: a type that holds one can only be persisted by leaving it out.
public struct SecretValues: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private var byName: [String: String]

    /// Creates a set of secret values.
    public init(_ byName: [String: String] = [:]) {
        self.byName = byName
    }

    /// The value of the secret `name`, if it is held.
    public subscript(name: String) -> String? {
        get { byName[name] }
        set { byName[name] = newValue }
    }

    /// The names held, sorted.
    public var names: [String] { byName.keys.sorted() }

    /// Name and value pairs, sorted by name (for the runner's secrets file).
    public var entries: [(name: String, value: String)] {
        byName.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// The distinct non-empty values (what a `SecretMasker` hides).
    public var values: [String] { Array(Set(byName.values.filter { !$0.isEmpty })).sorted() }

    /// True when no secret is held.
    public var isEmpty: Bool { byName.isEmpty }

    /// The names with their values hidden: `[HF_TOKEN: ***]`.
    public var description: String {
        "[" + names.map { "\($0): ***" }.joined(separator: ", ") + "]"
    }

    /// The same as `description`.
    public var debugDescription: String { description }

    /// Reflection (`dump`, `Mirror`) sees names only.
    public var customMirror: Mirror { Mirror(self, children: names.map { (label: $0, value: "***" as Any) }) }
}

/// True when an environment variable's name looks like it holds a credential (`*_TOKEN`, `*_KEY`, `*_SECRET`,
/// `*PASSWORD*`, or `TOKEN`/`SECRET` alone), compared case-insensitively: such values belong in `secrets:`.
public func looksLikeSecretName(_ name: String) -> Bool {
    let upper = name.uppercased()
    if upper == "TOKEN" || upper == "SECRET" { return true }
    return upper.hasSuffix("_TOKEN") || upper.hasSuffix("_KEY") || upper.hasSuffix("_SECRET") || upper.contains("PASSWORD")
}
