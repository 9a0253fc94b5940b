/// An OpenSSH client configuration (~/.ssh/config) read the way `ssh` reads it, for the settings dstack uses.
///
/// Supported: `Host` blocks (several patterns per line, `*`, `?`, `!negation`, matched case-insensitively), settings
/// before the first `Host` applying to every host, `Match` with `all`, `host`, `originalhost`, `user`, `localuser`,
/// `canonical`, `final` and `!` before a criterion (pattern lists with `,` and `!`), `Include` (through the reader
/// given to `parse`; an included file starts in the including block's state, which is restored after it), a second
/// pass when `Match final` is present, case-insensitive keywords, `Key value` and `Key=value`, single and double
/// quotes with `\` escapes, and `#` comments. `Match exec` never matches here (this type runs nothing; dstack asks
/// `ssh -G` wherever an `ssh` client is installed), and `CanonicalizeHostname` is not applied.
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

    /// One criterion of a `Match` line.
    struct Criterion: Sendable, Hashable {
        /// `all`, `host`, `originalhost`, `user`, `localuser`, `canonical`, `final` or `exec`.
        var attribute: String
        /// Written with a leading `!`.
        var negated: Bool
        /// The pattern list (or command), empty for `all`, `canonical` and `final`.
        var argument: String
    }

    /// One entry of a file, in order.
    indirect enum Entry: Sendable, Hashable {
        /// A `Host` line: the patterns that decide whether the lines after it apply.
        case host([String])
        /// A `Match` line: its criteria.
        case match([Criterion])
        /// A setting.
        case setting(Line)
        /// An `Include`: the files it named, each parsed, in the order `glob` sorts them.
        case include([SSHConfig])
    }

    /// A file that `Include` names: its name for messages and its text.
    public struct IncludedFile: Sendable, Hashable {
        /// The path, for messages.
        public var displayName: String
        /// The file's text.
        public var text: String

        /// Creates an included file.
        public init(displayName: String, text: String) {
            self.displayName = displayName
            self.text = text
        }
    }

    /// The name errors and messages use for the file.
    public var displayName: String
    var entries: [Entry]

    /// Parses the text of an ssh config; the lines `ssh` itself would refuse (an unclosed quote, a keyword without a
    /// value, a bad `Port`, an unknown `Match` criterion) are errors, other keywords are kept without being checked.
    ///
    /// `include` turns one argument of an `Include` line into the files it names (tilde, `~/.ssh`-relative paths and
    /// globs are the caller's business: this type does no I/O); without one, `Include` lines are ignored.
    public static func parse(text: String, displayName: String = "~/.ssh/config",
                             include: ((String) throws(ConfigError) -> [IncludedFile])? = nil) throws(ConfigError) -> SSHConfig {
        try parse(text: text, displayName: displayName, include: include, depth: 0)
    }

    private static func parse(text: String, displayName: String, include: ((String) throws(ConfigError) -> [IncludedFile])?,
                              depth: Int) throws(ConfigError) -> SSHConfig {
        let source = SourceFile(displayName: displayName, text: text)
        var entries: [Entry] = []
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
                entries.append(.host(arguments.map(\.text)))
            case "match":
                switch parseCriteria(arguments) {
                case .success(let criteria): entries.append(.match(criteria))
                case .failure(let problem): fail(problem.offset, problem.message)
                }
            case "include":
                guard let include else { continue }
                guard depth < 16 else {
                    fail(keywordStart, "Include nested more than 16 deep; look for a file that includes itself")
                    continue
                }
                var files: [SSHConfig] = []
                for argument in arguments {
                    do {
                        for file in try include(argument.text) {
                            files.append(try parse(text: file.text, displayName: file.displayName, include: include,
                                                   depth: depth + 1))
                        }
                    } catch {
                        diagnostics += error.diagnostics
                    }
                }
                entries.append(.include(files))
            case "port":
                if parsePort(first.text) == nil {
                    fail(first.offset, "'\(written)' must be a number from 1 to 65535, got '\(first.text)'")
                    continue
                }
                entries.append(.setting(line))
            default:
                entries.append(.setting(line))
            }
        }
        guard diagnostics.isEmpty else { throw ConfigError(diagnostics) }
        return SSHConfig(displayName: displayName, entries: entries)
    }

    /// The settings for `host` as `ssh host` would use them: the first value obtained for a keyword wins, in file
    /// order across every matching block (so a trailing `Host *` supplies defaults), and IdentityFile accumulates.
    ///
    /// `Match user` compares the user obtained so far, else `localUser`. HostName has `%h` and `%%` expanded;
    /// identity files and known_hosts files are returned as written (see `expandedIdentityFiles`).
    public func resolve(host: String, localUser: String = "") -> SSHHostConfig {
        var state = Resolution(alias: host.lowercased(), localUser: localUser)
        state.run(entries, active: true, neverMatch: false)
        if state.wantFinalPass {
            // As ssh does: read everything again, `canonical`/`final` now matching and `Host` seeing the HostName.
            state.final = true
            state.target = (state.out.hostName ?? host).lowercased()
            state.run(entries, active: true, neverMatch: false)
        }
        return state.out
    }
}

/// The state of one resolution: what has been obtained so far and what `Match` compares against.
private struct Resolution {
    /// The host as given, lowercased (`%h` in HostName, `originalhost`).
    var alias: String
    /// What `Host` patterns match: the alias, or in the final pass the HostName.
    var target: String
    var localUser: String
    var final = false
    var wantFinalPass = false
    var jumpDecided = false
    var commandDecided = false
    var out = SSHHostConfig()

    init(alias: String, localUser: String) {
        self.alias = alias
        self.target = alias
        self.localUser = localUser
    }

    mutating func run(_ entries: [SSHConfig.Entry], active initial: Bool, neverMatch: Bool) {
        var active = initial
        for entry in entries {
            switch entry {
            case .host(let patterns):
                active = !neverMatch && hostLineMatches(patterns, target)
            case .match(let criteria):
                var matched = true
                for criterion in criteria where !evaluate(criterion) { matched = false }
                active = !neverMatch && matched
            case .setting(let line):
                if active { apply(line) }
            case .include(let files):
                for file in files { run(file.entries, active: active, neverMatch: neverMatch || !active) }
            }
        }
    }

    /// Whether one criterion holds; every criterion is evaluated (so `final` is noticed even after a failing one).
    mutating func evaluate(_ criterion: SSHConfig.Criterion) -> Bool {
        let result: Bool
        switch criterion.attribute {
        case "all": result = true
        case "canonical", "final":
            if criterion.attribute == "final" { wantFinalPass = true }
            result = final
        case "host":
            let hostName = out.hostName.map { $0.lowercased() } ?? alias
            result = patternListMatches(criterion.argument.lowercased(), hostName)
        case "originalhost": result = patternListMatches(criterion.argument.lowercased(), alias)
        case "user": result = patternListMatches(criterion.argument, out.user ?? localUser)
        case "localuser": result = patternListMatches(criterion.argument, localUser)
        default: result = false  // exec: this type runs nothing
        }
        return result != criterion.negated
    }

    mutating func apply(_ line: SSHConfig.Line) {
        let value = line.arguments[0]
        switch line.keyword {
        case "hostname":
            if out.hostName == nil { out.hostName = expandPercentTokens(value, ["%": "%", "h": alias]) }
        case "user":
            if out.user == nil { out.user = value }
        case "port":
            if out.port == nil { out.port = parsePort(value) }
        case "identityfile":
            if !out.identityFiles.contains(value) { out.identityFiles.append(value) }
        case "identitiesonly":
            if out.identitiesOnly == nil { out.identitiesOnly = ["yes", "true"].contains(value.lowercased()) }
        case "userknownhostsfile":
            if out.userKnownHostsFiles.isEmpty { out.userKnownHostsFiles = line.arguments }
        case "connecttimeout":
            if out.connectTimeout == nil { out.connectTimeout = parseSeconds(value) ?? 0 }
        case "serveraliveinterval":
            if out.serverAliveInterval == nil { out.serverAliveInterval = parseSeconds(value) ?? 0 }
        case "proxyjump":
            // As ssh 9 does: an earlier ProxyJump (even `none`) or ProxyCommand (even `none`) wins.
            guard !jumpDecided, !commandDecided else { return }
            jumpDecided = true
            if value != "none" { out.proxyJump = value }
        case "proxycommand":
            // `ProxyJump none` does not stop a later ProxyCommand; a real ProxyJump does.
            guard !commandDecided, out.proxyJump == nil else { return }
            commandDecided = true
            if line.rest != "none" { out.proxyCommand = line.rest }
        default:
            return
        }
    }
}

/// A `Match` line that ssh would refuse: where and why.
private struct MatchProblem: Error {
    var offset: Int
    var message: String
}

/// Reads the criteria of a `Match` line as ssh does: `all` stands alone (or with `canonical`/`final`), the others
/// take one argument, and a leading `!` negates one.
private func parseCriteria(_ arguments: [(text: String, offset: Int)]) -> Result<[SSHConfig.Criterion], MatchProblem> {
    var out: [SSHConfig.Criterion] = []
    var i = 0
    while i < arguments.count {
        let (written, offset) = arguments[i]
        i += 1
        let negated = written.hasPrefix("!")
        let attribute = String(negated ? written.dropFirst() : Substring(written)).lowercased()
        switch attribute {
        case "all", "canonical", "final":
            out.append(.init(attribute: attribute, negated: negated, argument: ""))
        case "host", "originalhost", "user", "localuser", "exec":
            guard i < arguments.count else {
                return .failure(MatchProblem(offset: offset, message: "Match '\(written)' needs an argument"))
            }
            out.append(.init(attribute: attribute, negated: negated, argument: arguments[i].text))
            i += 1
        default:
            return .failure(MatchProblem(offset: offset, message:
                "unsupported Match attribute '\(written)'; use all, canonical, final, exec, host, originalhost, user or localuser"))
        }
    }
    if out.contains(where: { $0.attribute == "all" }),
       out.contains(where: { !["all", "canonical", "final"].contains($0.attribute) }) {
        return .failure(MatchProblem(offset: arguments[0].offset, message:
            "Match 'all' cannot be combined with other criteria (only with canonical or final)"))
    }
    return .success(out)
}

/// OpenSSH's `match_pattern_list`: comma-separated patterns, any `!pattern` that matches refuses, else any
/// plain one that matches accepts.
func patternListMatches(_ list: String, _ text: String) -> Bool {
    var matched = false
    let name = Array(text)
    for pattern in list.split(separator: ",") {
        if pattern.hasPrefix("!") {
            if globMatches(Array(pattern.dropFirst()), name) { return false }
        } else if globMatches(Array(pattern), name) {
            matched = true
        }
    }
    return matched
}

/// Whether a `Host` line's patterns accept `host`: one of them matches and none of its negated (`!`) ones does.
private func hostLineMatches(_ patterns: [String], _ host: String) -> Bool {
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

/// OpenSSH's time format for ConnectTimeout and ServerAliveInterval: seconds, or numbers with s/m/h/d/w suffixes.
private func parseSeconds(_ text: String) -> Int? {
    if let n = Int(text) { return n }
    var total = 0, number = ""
    for ch in text.lowercased() {
        if ch.isNumber { number.append(ch); continue }
        guard let n = Int(number) else { return nil }
        let unit: Int
        switch ch {
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3600
        case "d": unit = 86400
        case "w": unit = 604800
        default: return nil
        }
        total += n * unit
        number = ""
    }
    if !number.isEmpty { total += Int(number) ?? 0 }
    return total
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
    /// Whether only the identity files are tried, not the agent's other keys (IdentitiesOnly).
    public var identitiesOnly: Bool?
    /// The known_hosts files (UserKnownHostsFile), as written.
    public var userKnownHostsFiles: [String]
    /// Seconds the connection may take (ConnectTimeout); 0 means the system's own.
    public var connectTimeout: Int?
    /// Seconds between keepalives (ServerAliveInterval); 0 means none.
    public var serverAliveInterval: Int?

    /// Creates settings; every value is optional.
    public init(hostName: String? = nil, user: String? = nil, port: Int? = nil, identityFiles: [String] = [],
                proxyJump: String? = nil, proxyCommand: String? = nil, identitiesOnly: Bool? = nil,
                userKnownHostsFiles: [String] = [], connectTimeout: Int? = nil, serverAliveInterval: Int? = nil) {
        self.hostName = hostName
        self.user = user
        self.port = port
        self.identityFiles = identityFiles
        self.proxyJump = proxyJump
        self.proxyCommand = proxyCommand
        self.identitiesOnly = identitiesOnly
        self.userKnownHostsFiles = userKnownHostsFiles
        self.connectTimeout = connectTimeout
        self.serverAliveInterval = serverAliveInterval
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

    /// A ProxyCommand with the tokens OpenSSH expands in it, `%%`, `%h`, `%n`, `%p` and `%r`; others are left.
    public func expandProxyCommand(_ command: String) -> String {
        expandPercentTokens(command, ["%": "%", "h": hostName, "n": alias, "p": String(port), "r": remoteUser])
    }

    /// `text` with `%%`, `%d`, `%h`, `%n`, `%p`, `%r` and `%u` expanded; other `%` tokens are left as written.
    public func expandTokens(_ text: String) -> String {
        expandPercentTokens(text, ["%": "%", "d": home, "h": hostName, "n": alias, "p": String(port),
                                   "r": remoteUser, "u": localUser])
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
