import Foundation

/// Hides secret values in one output stream: every byte that belongs to an occurrence of any value is replaced,
/// each unbroken run of such bytes by one `***`, whatever the chunks the stream arrives in.
///
/// A value may be split across two chunks, so the end of a chunk that could be the start of a value is held back
/// until the next chunk (or `finish`) decides it: only the longest suffix that is a proper prefix of some value,
/// never more. The output is the same for any chunking of the same stream, and what `mask` returned is never taken
/// back, so a stream masked again from its start (after a reconnect) yields the stored output as a prefix.
public struct SecretMasker: Sendable {
    /// The text that stands for a hidden run.
    public static let replacement = Data("***".utf8)

    private let secrets: [[UInt8]]
    private let longest: Int
    /// Bytes not yet decided: the longest suffix seen that is a proper prefix of a value.
    private var held: [UInt8] = []
    /// How many leading bytes of `held` are covered by an occurrence that started before it.
    private var heldCovered = 0
    /// Whether the last byte let out was hidden (a run goes on as one `***`).
    private var inRun = false

    /// Creates a masker for `values` (empty ones are ignored).
    public init(_ values: [String]) {
        secrets = Array(Set(values.filter { !$0.isEmpty }.map { Array($0.utf8) })).sorted { $0.count > $1.count }
        longest = secrets.first?.count ?? 0
    }

    /// True when there is nothing to hide (the stream passes through untouched).
    public var isEmpty: Bool { secrets.isEmpty }

    /// The masked form of the next chunk of the stream (possibly shorter, or empty while a value may be starting).
    public mutating func mask(_ chunk: Data) -> Data {
        if secrets.isEmpty { return chunk }
        var buffer = held
        buffer.append(contentsOf: chunk)
        let (covered, occurrences) = coverage(buffer)
        let pending = undecidedTail(buffer)
        let out = emit(buffer, covered, upTo: pending)
        // Held bytes that an occurrence starting before them covers stay known as covered; occurrences that start
        // inside the held bytes are found again with the next chunk.
        var end = heldCovered
        for occurrence in occurrences where occurrence.start < pending { end = max(end, occurrence.end) }
        held = Array(buffer[pending...])
        heldCovered = max(0, end - pending)
        return out
    }

    /// The rest of the stream once it has ended: what was held back, masked as the end of the stream.
    public mutating func finish() -> Data {
        if secrets.isEmpty || held.isEmpty { return Data() }
        let buffer = held
        let (covered, _) = coverage(buffer)
        held = []
        heldCovered = 0
        return emit(buffer, covered, upTo: buffer.count)
    }

    /// Masks a whole text at once (a command line's arguments, a message).
    public static func mask(_ text: String, hiding values: [String]) -> String {
        var masker = SecretMasker(values)
        if masker.isEmpty { return text }
        var out = masker.mask(Data(text.utf8))
        out.append(masker.finish())
        return String(decoding: out, as: UTF8.self)
    }

    /// Which bytes of `buffer` are covered (by a complete occurrence, or carried over as covered), and the
    /// complete occurrences found.
    private func coverage(_ buffer: [UInt8]) -> ([Bool], [(start: Int, end: Int)]) {
        let n = buffer.count
        var covered = [Bool](repeating: false, count: n)
        for i in 0..<min(heldCovered, n) { covered[i] = true }
        var occurrences: [(start: Int, end: Int)] = []
        buffer.withUnsafeBufferPointer { bytes in
            for secret in secrets where secret.count <= n {
                let first = secret[0]
                var j = 0
                while j + secret.count <= n {
                    if bytes[j] == first, Self.matches(bytes, at: j, secret, length: secret.count) {
                        for k in j..<(j + secret.count) { covered[k] = true }
                        occurrences.append((j, j + secret.count))
                    }
                    j += 1
                }
            }
        }
        return (covered, occurrences)
    }

    /// Where the undecided tail of `buffer` starts: the first position from which the rest is a proper prefix of
    /// some value (the end when there is none).
    private func undecidedTail(_ buffer: [UInt8]) -> Int {
        let n = buffer.count
        return buffer.withUnsafeBufferPointer { bytes in
            for j in max(0, n - longest + 1)..<n {
                let length = n - j
                if secrets.contains(where: { $0.count > length && Self.matches(bytes, at: j, $0, length: length) }) {
                    return j
                }
            }
            return n
        }
    }

    /// True when the first `length` bytes of `secret` are at `offset` of `bytes`.
    private static func matches(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int, _ secret: [UInt8], length: Int) -> Bool {
        for k in 0..<length where bytes[offset + k] != secret[k] { return false }
        return true
    }

    /// Lets out `buffer[..<end]` with covered runs replaced.
    private mutating func emit(_ buffer: [UInt8], _ covered: [Bool], upTo end: Int) -> Data {
        var out = Data()
        out.reserveCapacity(end)
        for i in 0..<end {
            if covered[i] {
                if !inRun { out.append(Self.replacement) }
                inRun = true
            } else {
                out.append(buffer[i])
                inRun = false
            }
        }
        return out
    }
}
