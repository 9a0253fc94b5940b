@_exported import DstackYAML

/// A value together with where it was written, so that late errors can still point at the source.
public struct Located<Value: Sendable & Hashable>: Sendable, Hashable {
    /// The value.
    public var value: Value
    /// Where it was written.
    public var mark: Mark
    /// The file it was written in (its display name).
    public var file: String

    /// Creates a located value.
    public init(_ value: Value, at mark: Mark, in file: String) {
        self.value = value
        self.mark = mark
        self.file = file
    }
}

/// Configuration errors: one or more diagnostics, each pointing into a file. The CLI exits 2 on these.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    /// The problems found, in file order.
    public var diagnostics: [Diagnostic]
    /// A problem with no location (a missing file, a cycle across workflows, ...).
    public var messages: [String]

    /// Creates an error from diagnostics and located-less messages.
    public init(_ diagnostics: [Diagnostic], messages: [String] = []) {
        self.diagnostics = diagnostics
        self.messages = messages
    }

    /// Creates an error with a single message that has no source location.
    public init(message: String) {
        self.init([], messages: [message])
    }

    public var description: String {
        (diagnostics.map(\.description) + messages.map { "error: \($0)" }).joined(separator: "\n")
    }
}

/// Suggests the closest of `candidates` to `word`, for "did you mean" hints.
public func closestMatch(to word: String, in candidates: [String]) -> String? {
    var best: (String, Int)?
    for candidate in candidates {
        let distance = editDistance(word.lowercased(), candidate.lowercased())
        let limit = max(2, candidate.count / 3)
        if distance <= limit, best == nil || distance < best!.1 {
            best = (candidate, distance)
        }
        if best == nil, candidate.hasPrefix(word) || word.hasPrefix(candidate), min(word.count, candidate.count) >= 3 {
            best = (candidate, limit)
        }
    }
    return best?.0
}

/// A " (did you mean 'x'?)" suffix, or "" when nothing is close.
public func didYouMean(_ word: String, _ candidates: [String]) -> String {
    closestMatch(to: word, in: candidates).map { " (did you mean '\($0)'?)" } ?? ""
}

private func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let cost = a[i - 1] == b[j - 1] ? 0 : 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
