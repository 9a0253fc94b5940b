/// Which file names dstack can carry to runners, and how to show one that it cannot.
///
/// File names travel to runners inside line-based scripts (`hash mode path` lines read with `read -r`): a name
/// holding a newline would split into two lines there, and one holding other control characters can hide what it
/// is in messages and logs. Such names are refused when the code is snapshot.
public enum FileNames {
    /// Why `path` cannot be part of a snapshot (the control character it holds, in words), or nil when it can.
    public static func problem(_ path: String) -> String? {
        for scalar in path.unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7F {
            switch scalar {
            case "\n": return "a newline"
            case "\t": return "a tab"
            case "\r": return "a carriage return"
            default: return "the control character \(escaped(String(scalar)))"
            }
        }
        return nil
    }

    /// `path` with control characters written as escapes (`\n`, `\t`, `\r`, `\u{1B}`), for messages.
    public static func escaped(_ path: String) -> String {
        var out = ""
        for scalar in path.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            case "\\": out += "\\\\"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F {
                    out += "\\u{" + String(scalar.value, radix: 16, uppercase: true) + "}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }

    /// Whether a tree script can remove `path` by name from a `- path` line: a plain relative path (no `.`, `..`
    /// or empty component) without blanks or control characters. A name such as `.. x` would be read as `..`
    /// and remove the folder above the tree.
    public static func isRemovableByLine(_ path: some StringProtocol) -> Bool {
        guard !path.isEmpty, !path.hasPrefix("/") else { return false }
        for component in path.split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty || component == "." || component == ".." { return false }
        }
        return !path.unicodeScalars.contains { $0.value <= 0x20 || $0.value == 0x7F }
    }
}
