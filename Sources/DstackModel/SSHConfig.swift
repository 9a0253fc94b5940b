/// An OpenSSH client configuration (~/.ssh/config) read the way `ssh` reads it, for the settings dstack uses.
///
/// Supported: `Host` blocks (several patterns per line, `*`, `?`, `!negation`, matched case-insensitively), settings
/// before the first `Host` applying to every host, case-insensitive keywords, `Key value` and `Key=value`, single and
/// double quotes with `\` escapes, and `#` comments. Not supported: `Match` blocks (their settings are skipped, as if
/// they never matched) and `Include` (ignored: settings in included files are not seen); `${VAR}` is not expanded.
public struct SSHConfig: Sendable, Hashable {
    /// One `keyword arguments` line.
    struct Line: Sendable, Hashable {
        /// The keyword, lowercased.
        var keyword: String
        /// The arguments, split and unquoted as OpenSSH does.
        var arguments: [String]
        /// Everything after the keyword, raw (ProxyCommand takes it whole).
        var rest: String
    }

    /// What decides whether a block's lines apply.
    enum Condition: Sendable, Hashable {
        /// Lines before the first `Host` or `Match`: every host.
        case always
        /// `Host` patterns.
        case host([String])
        /// A `Match` block: never applied.
        case match
    }

    /// A run of lines under one condition.
    struct Block: Sendable, Hashable {
        var condition: Condition
        var lines: [Line] = []
    }

    /// The name errors and messages use for the file.
    public var displayName: String
    var blocks: [Block]

    /// Parses the text of an ssh config; the lines `ssh` itself would refuse (an unclosed quote, a keyword without a
    /// value, a bad `Port`) are errors, other keywords are kept without being checked.
    public static func parse(text: String, displayName: String = "~/.ssh/config") throws(ConfigError) -> SSHConfig {
        let source = SourceFile(displayName: displayName, text: text)
        var blocks = [Block(condition: .always)]
        var diagnostics: [Diagnostic] = []
        let lines = text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
        for (index, lineText) in lines.enumerated() {
            let chars = Array(lineText)
            func fail(_ offset: Int, _ message: String) {
                diagnostics.append(Diagnostic(source, Mark(line: index + 1, column: offset + 1), message))
            }
            var i = 0
            while i < chars.count, isBlank(chars[i]) { i += 1 }
            guard i < chars.count, chars[i] != "#" else { continue }
            let keywordStart = i
            while i < chars.count, !isBlank(chars[i]), chars[i] != "=" { i += 1 }
            let written = String(chars[keywordStart..<i])
            let keyword = written.lowercased()
            if written.isEmpty {
                fail(keywordStart, "a line must start with a keyword ('Keyword value' or 'Keyword=value')")
                continue
            }
            while i < chars.count, isBlank(chars[i]) { i += 1 }
            if i < chars.count, chars[i] == "=" {
                i += 1
                while i < chars.count, isBlank(chars[i]) { i += 1 }
            }
            var end = chars.count
            while end > i, isBlank(chars[end - 1]) { end -= 1 }
            let rest = String(chars[i..<end])
            let arguments: [(text: String, offset: Int)]
            switch splitArguments(chars, from: i) {
            case .success(let list): arguments = list
            case .failure(let open):
                let shown = open.quote == "'" ? "\"'\"" : "'\"'"
                fail(open.offset, "unclosed quote: this value has no closing \(shown)")
                continue
            }
            guard let first = arguments.first else {
                fail(keywordStart, "'\(written)' has no value; give one after it or remove the line")
                continue
            }
            let line = Line(keyword: keyword, arguments: arguments.map(\.text), rest: rest)
            switch keyword {
            case "host":
                blocks.append(Block(condition: .host(arguments.map(\.text))))
            case "match":
                blocks.append(Block(condition: .match))
            case "port":
                if parsePort(first.text) == nil {
                    fail(first.offset, "'\(written)' must be a number from 1 to 65535, got '\(first.text)'")
                    continue
                }
                blocks[blocks.count - 1].lines.append(line)
            default:
                blocks[blocks.count - 1].lines.append(line)
            }
        }
        guard diagnostics.isEmpty else { throw ConfigError(diagnostics) }
        return SSHConfig(displayName: displayName, blocks: blocks.filter { !$0.lines.isEmpty })
    }

    /// The settings for `host` as `ssh host` would use them: the first value obtained for a keyword wins, in file
    /// order across every matching block (so a trailing `Host *` supplies defaults), and IdentityFile accumulates.
    ///
    /// HostName has `%h` and `%%` expanded; identity files are returned as written (see `expandedIdentityFiles`).
    public func resolve(host: String) -> SSHHostConfig {
        var out = SSHHostConfig()
        var proxyDecided = false
        for block in blocks where block.applies(to: host) {
            for line in block.lines {
                let value = line.arguments[0]
                switch line.keyword {
                case "hostname":
                    if out.hostName == nil { out.hostName = expandHostName(value, host: host) }
                case "user":
                    if out.user == nil { out.user = value }
                case "port":
                    if out.port == nil { out.port = parsePort(value) }
                case "identityfile":
                    if !out.identityFiles.contains(value) { out.identityFiles.append(value) }
                case "proxyjump", "proxycommand":
                    // OpenSSH keeps whichever of the two comes first; `none` is a value too, and means no proxy.
                    guard !proxyDecided else { continue }
                    proxyDecided = true
                    if line.keyword == "proxyjump" {
                        out.proxyJump = value == "none" ? nil : value
                    } else {
                        out.proxyCommand = line.rest == "none" ? nil : line.rest
                    }
                default:
                    continue
                }
            }
        }
        return out
    }
}

/// The settings ~/.ssh/config gives one host; nil (or empty) where it says nothing.
public struct SSHHostConfig: Sendable, Hashable {
    /// The real address (HostName), with `%h` expanded.
    public var hostName: String?
    /// The login user (User).
    public var user: String?
    /// The sshd port (Port).
    public var port: Int?
    /// Private keys (IdentityFile), every one obtained, in order, as written.
    public var identityFiles: [String]
    /// The jump hosts (ProxyJump), unless `none`.
    public var proxyJump: String?
    /// The command that connects (ProxyCommand), unless `none`.
    public var proxyCommand: String?

    /// Creates settings; every value is optional.
    public init(hostName: String? = nil, user: String? = nil, port: Int? = nil, identityFiles: [String] = [],
                proxyJump: String? = nil, proxyCommand: String? = nil) {
        self.hostName = hostName
        self.user = user
        self.port = port
        self.identityFiles = identityFiles
        self.proxyJump = proxyJump
        self.proxyCommand = proxyCommand
    }

    /// The identity files with a leading `~` and OpenSSH's `%` tokens expanded against `expansion`.
    public func expandedIdentityFiles(_ expansion: SSHExpansion) -> [String] {
        identityFiles.map(expansion.expandPath)
    }
}

/// What OpenSSH's `%` tokens and a leading `~` stand for when it expands an IdentityFile.
public struct SSHExpansion: Sendable, Hashable {
    /// `%n`: the host as given (the alias).
    public var alias: String
    /// `%h`: the real host name.
    public var hostName: String
    /// `%r`: the remote (login) user.
    public var remoteUser: String
    /// `%u`: the local user.
    public var localUser: String
    /// `%p`: the port.
    public var port: Int
    /// `%d` and `~`: the local home directory.
    public var home: String

    /// Creates the values to expand with.
    public init(alias: String, hostName: String, remoteUser: String, localUser: String, port: Int, home: String) {
        self.alias = alias
        self.hostName = hostName
        self.remoteUser = remoteUser
        self.localUser = localUser
        self.port = port
        self.home = home
    }

    /// `path` with a leading `~` or `~/` replaced by `home` and then `%%`, `%d`, `%h`, `%n`, `%p`, `%r` and `%u`
    /// expanded; other `%` tokens are left as written.
    public func expandPath(_ path: String) -> String {
        if path == "~" || path.hasPrefix("~/") {
            // Tokens are expanded in the rest only, so a '%' in the home directory stays literal.
            return expandingTilde("~" + expandTokens(String(path.dropFirst())), home: home)
        }
        return expandTokens(path)
    }

    /// `text` with `%%`, `%d`, `%h`, `%n`, `%p`, `%r` and `%u` expanded; other `%` tokens are left as written.
    public func expandTokens(_ text: String) -> String {
        expandPercentTokens(text, ["%": "%", "d": home, "h": hostName, "n": alias, "p": String(port),
                                   "r": remoteUser, "u": localUser])
    }
}

extension SSHConfig.Block {
    /// Whether the block's settings apply to `host`: a `Host` line applies when one of its patterns matches and
    /// none of its negated (`!`) patterns does.
    func applies(to host: String) -> Bool {
        switch condition {
        case .always: return true
        case .match: return false
        case .host(let patterns):
            let name = Array(host.lowercased())
            var matched = false
            for pattern in patterns {
                if pattern.hasPrefix("!") {
                    if globMatches(Array(pattern.dropFirst().lowercased()), name) { return false }
                } else if globMatches(Array(pattern.lowercased()), name) {
                    matched = true
                }
            }
            return matched
        }
    }
}

/// Whether `text` matches a glob where `*` stands for any run of characters and `?` for one.
private func globMatches(_ pattern: [Character], _ text: [Character]) -> Bool {
    var p = 0, t = 0
    var star: (p: Int, t: Int)?
    while t < text.count {
        if p < pattern.count, pattern[p] == "?" || pattern[p] == text[t] {
            p += 1
            t += 1
        } else if p < pattern.count, pattern[p] == "*" {
            star = (p, t)
            p += 1
        } else if let s = star {
            // Let the last `*` take one more character and try again from there.
            star = (s.p, s.t + 1)
            p = s.p + 1
            t = s.t + 1
        } else {
            return false
        }
    }
    while p < pattern.count, pattern[p] == "*" { p += 1 }
    return p == pattern.count
}

private func isBlank(_ ch: Character) -> Bool {
    ch == " " || ch == "\t" || ch == "\u{0C}"
}

private func parsePort(_ text: String) -> Int? {
    guard let n = Int(text), (1...65535).contains(n) else { return nil }
    return n
}

private func expandHostName(_ value: String, host: String) -> String {
    expandPercentTokens(value, ["%": "%", "h": host])
}

/// `text` with each `%x` whose `x` is in `values` replaced; other `%` tokens are left as written.
private func expandPercentTokens(_ text: String, _ values: [Character: String]) -> String {
    var out = ""
    var iterator = text.makeIterator()
    while let ch = iterator.next() {
        guard ch == "%" else { out.append(ch); continue }
        guard let token = iterator.next() else { out.append(ch); break }
        if let value = values[token] { out += value } else { out += "%\(token)" }
    }
    return out
}

/// An unclosed quote: where it opened and which character it was.
private struct UnclosedQuote: Error {
    var offset: Int
    var quote: Character
}

/// Splits arguments as OpenSSH's `argv_split` does: blanks separate them, `'` and `"` group, `\` escapes a quote,
/// a backslash or (outside quotes) a space, and a `#` at the start of an argument ends the line.
private func splitArguments(_ chars: [Character], from start: Int) -> Result<[(text: String, offset: Int)], UnclosedQuote> {
    var out: [(text: String, offset: Int)] = []
    var i = start
    while i < chars.count {
        if isBlank(chars[i]) { i += 1; continue }
        if chars[i] == "#" { break }
        let tokenStart = i
        var token = ""
        var quote: (char: Character, offset: Int)?
        while i < chars.count {
            let ch = chars[i]
            if ch == "\\", i + 1 < chars.count,
               chars[i + 1] == "'" || chars[i + 1] == "\"" || chars[i + 1] == "\\" || (quote == nil && chars[i + 1] == " ") {
                token.append(chars[i + 1])
                i += 2
                continue
            }
            if quote == nil, isBlank(ch) { break }
            if quote == nil, ch == "'" || ch == "\"" {
                quote = (ch, i)
            } else if let q = quote, ch == q.char {
                quote = nil
            } else {
                token.append(ch)
            }
            i += 1
        }
        if let q = quote { return .failure(UnclosedQuote(offset: q.offset, quote: q.char)) }
        out.append((token, tokenStart))
    }
    return .success(out)
}
