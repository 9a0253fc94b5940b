/// Quotes `text` as one word for a POSIX shell (internal: callers outside use DstackModel's `shellQuote`): unchanged when it holds only safe characters, otherwise in
/// single quotes with each `'` written as `'\''`; nothing inside is expanded ($, `, *, ;, newlines).
func shellQuote(_ text: String) -> String {
    let safe = text.unicodeScalars.allSatisfy { scalar in
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", "_", "-", ".", "/", ",", ":", "@", "%", "+", "=": return true
        default: return false
        }
    }
    if safe && !text.isEmpty { return text }
    return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

extension String {
    /// `replacingOccurrences` without Foundation, for the one use above.
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: Character(target), omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
