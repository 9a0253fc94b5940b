extension Inventory {
    /// The keys a hosts inventory may hold at its top level.
    public static let keys = ["defaults", "runners"]
    /// The keys `defaults:` may hold.
    public static let defaultsKeys = ["user", "port", "identity_file", "workdir", "max_jobs", "labels", "proxy_jump",
                                      "transport"]
    /// The keys a runner may hold.
    public static let runnerKeys = ["name", "host", "user", "port", "identity_file", "workdir", "max_jobs", "labels",
                                    "resources", "proxy_jump", "transport", "storage_path", "kind"] + slurmRunnerKeys

    /// Parses and validates a hosts inventory; every problem found is reported at once, in file order, each with
    /// its location, the line and a caret.
    public static func parse(_ source: SourceFile) throws(ConfigError) -> Inventory {
        var r = NodeReader(source)
        var parsed: (InventoryDefaults, [RunnerSpec])?
        do {
            if let root = try YAMLReader.parse(source) {
                parsed = parseFile(root, &r)
            } else {
                r.error(Mark(line: 1, column: 1), "the file is empty; list the runners under 'runners:', "
                        + "or delete the file to run jobs on this machine (the local runner)")
            }
        } catch {
            r.diagnostics.append(error)
        }
        guard r.diagnostics.isEmpty, let parsed else {
            let ordered = r.diagnostics.enumerated().sorted { a, b in
                (a.element.mark.line, a.element.mark.column, a.offset) < (b.element.mark.line, b.element.mark.column, b.offset)
            }
            throw ConfigError(ordered.map(\.element))
        }
        return Inventory(defaults: parsed.0, runners: parsed.1, source: source)
    }

    private static func parseFile(_ root: Node, _ r: inout NodeReader) -> (InventoryDefaults, [RunnerSpec]) {
        var defaults = InventoryDefaults()
        let errorsBefore = r.diagnostics.count
        guard let top = r.mapping(root, what: "the hosts inventory", allowed: keys) else { return (defaults, []) }
        if let section = top.first(where: { $0.name == "defaults" }) {
            defaults = parseDefaults(section.value, &r)
        }
        guard let list = top.first(where: { $0.name == "runners" }) else {
            // An unknown key reported just now (`runner:`) already says what is missing.
            if r.diagnostics.count == errorsBefore {
                r.error(root.mark, "missing 'runners:' list; list the machines to run jobs on, "
                        + "or delete the file to run jobs on this machine (the local runner)")
            }
            return (defaults, [])
        }
        if list.value.isNull || list.value.sequence?.isEmpty == true {
            r.error(list.value.isNull ? list.key.mark : list.value.mark,
                    "'runners' is empty; list at least one runner ('- name: ...' with 'host: ...'), "
                    + "or delete the file to run jobs on this machine (the local runner)")
            return (defaults, [])
        }
        guard let items = list.value.sequence else {
            r.error(list.value.mark, "'runners' must be a list of runners ('- name: ...' items), got \(list.value.typeDescription)")
            return (defaults, [])
        }
        var runners: [RunnerSpec] = []
        var firstByName: [String: Located<String>] = [:]
        for item in items {
            guard let runner = parseRunner(item, &r) else { continue }
            if let first = firstByName[runner.name.value] {
                r.error(runner.name.mark, "duplicate runner name '\(runner.name.value)' (first at line \(first.mark.line)); names must be unique")
                continue
            }
            firstByName[runner.name.value] = runner.name
            runners.append(runner)
        }
        return (defaults, runners)
    }

    private static func parseDefaults(_ node: Node, _ r: inout NodeReader) -> InventoryDefaults {
        var fields = SharedFields()
        if node.isNull { return InventoryDefaults() }
        // Unknown keys are checked here rather than by `mapping`, so that a runner's own key gets its own message.
        for (key, keyNode, value) in r.mapping(node, what: "'defaults'") ?? [] {
            if defaultsKeys.contains(key) {
                fields.read(key, value, &r)
            } else if runnerKeys.contains(key) {
                r.error(keyNode.mark, "'\(key)' cannot be a default; give it to each runner under 'runners:'")
            } else {
                r.error(keyNode.mark, "unknown key '\(key)' in 'defaults'\(didYouMean(key, defaultsKeys))")
            }
        }
        var defaults = InventoryDefaults(user: fields.user, port: fields.port, identityFiles: fields.identityFiles,
                                         workdir: fields.workdir, maxJobs: fields.maxJobs, labels: fields.labels)
        defaults.proxyJump = fields.proxyJump
        defaults.transport = fields.transport
        return defaults
    }

    private static func parseRunner(_ node: Node, _ r: inout NodeReader) -> RunnerSpec? {
        guard node.mapping != nil else {
            r.error(node.mark, "each runner must be a mapping with 'name:' and 'host:', got \(node.typeDescription)")
            return nil
        }
        guard let pairs = r.mapping(node, what: "a runner", allowed: runnerKeys) else { return nil }
        // Keys the unknown ones were taken for (`hostname`), so they are not also reported as missing.
        let suggested = Set((node.mapping ?? []).compactMap { pair in
            pair.key.scalar.flatMap { runnerKeys.contains($0) ? nil : closestMatch(to: $0, in: runnerKeys) }
        })
        var fields = SharedFields()
        var name: Located<String>?
        var host: Located<String>?
        var resources: ResourceOverride?
        var storagePath: Located<String>?
        var slurm = SlurmFields()
        for (key, _, value) in pairs {
            switch key {
            case "kind", "partition", "account", "qos", "time":
                slurm.read(key, value, &r)
            case "name":
                name = r.string(value, what: "'name'")
                if let n = name, !isValidRunnerName(n.value) {
                    r.error(value.mark, "runner name '\(n.value)' must start with a letter or digit and hold only letters, digits, '-', '_' and '.'")
                    name = nil
                }
            case "host":
                host = r.string(value, what: "'host'")
                if let h = host, let problem = hostProblem(h.value) {
                    r.error(value.mark, problem)
                    host = nil
                }
            case "resources":
                resources = parseResourceOverride(value, &r)
            case "storage_path":
                storagePath = r.nonEmptyString(value, what: "'storage_path'")
                if let p = storagePath, !p.value.hasPrefix("/") {
                    r.error(value.mark, "storage_path '\(p.value)' must be absolute: the path at which this runner sees the storage directory")
                    storagePath = nil
                }
            default:
                fields.read(key, value, &r)
            }
        }
        let written = Set(pairs.map(\.name))
        let label = name.map { "runner '\($0.value)'" } ?? "a runner"
        if name == nil, !written.contains("name"), !suggested.contains("name") {
            r.error(node.mark, "\(label) is missing 'name'; give it a unique name")
        }
        if host == nil, !written.contains("host"), !suggested.contains("host") {
            r.error(node.mark, "\(label) is missing 'host' (an address, a host name or a Host alias of ~/.ssh/config)")
        }
        guard let name, let host else { return nil }
        var spec = RunnerSpec(name: name, host: host, user: fields.user, port: fields.port,
                              identityFiles: fields.identityFiles, workdir: fields.workdir, maxJobs: fields.maxJobs,
                              labels: fields.labels, resources: resources)
        spec.proxyJump = fields.proxyJump
        spec.transport = fields.transport
        spec.storagePath = storagePath
        spec.slurm = slurm.settings(&r)
        return spec
    }

    private static func parseResourceOverride(_ node: Node, _ r: inout NodeReader) -> ResourceOverride? {
        guard let pairs = r.mapping(node, what: "'resources'", allowed: ["gpu", "cpu", "memory"]) else { return nil }
        var out = ResourceOverride()
        for (key, _, value) in pairs {
            switch key {
            case "gpu":
                guard value.mapping != nil else {
                    out.gpuCount = r.integer(value, what: "'gpu'", minimum: 0)
                    continue
                }
                for (gpuKey, _, gpuValue) in r.mapping(value, what: "'gpu'", allowed: ["count", "name", "memory"]) ?? [] {
                    switch gpuKey {
                    case "count": out.gpuCount = r.integer(gpuValue, what: "gpu count", minimum: 0)
                    case "name": out.gpuName = r.string(gpuValue, what: "gpu name")
                    default: out.gpuMemory = r.size(gpuValue, what: "gpu memory")
                    }
                }
            case "cpu":
                out.cpu = r.integer(value, what: "'cpu'", minimum: 1)
            default:
                out.memory = r.size(value, what: "'memory'")
            }
        }
        return out
    }
}

/// The settings `defaults:` and a runner share, read the same way in both.
private struct SharedFields {
    var user: Located<String>?
    var port: Located<Int>?
    var identityFiles: [Located<String>]?
    var workdir: Located<String>?
    var maxJobs: Located<Int>?
    var labels: [Located<String>] = []
    var proxyJump: Located<String>?
    var transport: Located<String>?

    mutating func read(_ key: String, _ value: Node, _ r: inout NodeReader) {
        switch key {
        case "user":
            user = r.nonEmptyString(value, what: "'user'")
        case "port":
            port = r.integer(value, what: "'port'", minimum: 1, maximum: 65535)
        case "identity_file":
            if value.sequence != nil {
                identityFiles = r.stringList(value, what: "'identity_file'")
                if value.sequence?.isEmpty == true {
                    r.error(value.mark, "'identity_file' is empty; give a path or a list of paths, or remove the key")
                }
            } else if value.isNull || value.scalar == nil {
                r.error(value.mark, "'identity_file' must be a path or a list of paths, got \(value.typeDescription)")
            } else {
                identityFiles = r.nonEmptyString(value, what: "'identity_file'").map { [$0] }
            }
        case "workdir":
            workdir = r.nonEmptyString(value, what: "'workdir'")
            if let w = workdir, w.value.hasPrefix("~"), w.value != "~", !w.value.hasPrefix("~/") {
                r.error(value.mark, "workdir '\(w.value)' starts with '~user', which dstack does not expand; "
                        + "write an absolute path or one relative to the login directory")
            }
        case "max_jobs":
            maxJobs = r.integer(value, what: "'max_jobs'", minimum: 1)
        case "transport":
            transport = r.nonEmptyString(value, what: "'transport'")
            if let t = transport, !Inventory.transports.contains(t.value) {
                r.error(value.mark, "transport '\(t.value)' is not one of \(Inventory.transports.joined(separator: ", "))\(didYouMean(t.value, Inventory.transports))")
                transport = nil
            }
        case "proxy_jump":
            proxyJump = r.nonEmptyString(value, what: "'proxy_jump'")
            if let jump = proxyJump, case .failure(let problem) = JumpHop.parseChain(jump.value) {
                r.error(value.mark, "proxy_jump '\(jump.value)': \(problem.message)")
            }
        default:
            labels = r.stringList(value, what: "'labels'") ?? []
            for label in labels where !isValidRunnerName(label.value) {
                r.error(label.mark, "label '\(label.value)' must start with a letter or digit and hold only letters, digits, '-', '_' and '.'")
            }
        }
    }
}

/// True for a runner name or label: ASCII letters, digits, `-`, `_` and `.`, starting with a letter or digit.
public func isValidRunnerName(_ name: String) -> Bool {
    guard let first = name.first, first.isASCII, first.isLetter || first.isNumber else { return false }
    return name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
}

/// What is wrong with a `host:` value, or nil when it may be an address, a host name or an alias.
private func hostProblem(_ host: String) -> String? {
    if host.trimmingWhitespace().isEmpty {
        return "'host' is empty; write an address, a host name or a Host alias of ~/.ssh/config"
    }
    if host.contains(where: { $0 == " " || $0 == "\t" }) {
        return "host '\(host)' holds a space; write one address, host name or Host alias of ~/.ssh/config"
    }
    if host.contains("@") {
        return "host '\(host)' holds a user; write the user under 'user:' and only the host under 'host:'"
    }
    // One ':' is a port written into the host; IPv6 addresses hold two or more.
    if host.filter({ $0 == ":" }).count == 1 {
        return "host '\(host)' holds a port; write the port under 'port:' and only the host under 'host:'"
    }
    return nil
}

extension NodeReader {
    /// A non-empty string.
    fileprivate mutating func nonEmptyString(_ node: Node, what: String) -> Located<String>? {
        guard let s = string(node, what: what) else { return nil }
        if s.value.trimmingWhitespace().isEmpty {
            error(node.mark, "\(what) is empty; give a value or remove the key")
            return nil
        }
        return s
    }

    /// A whole number within `minimum...maximum`, written plain or quoted.
    fileprivate mutating func integer(_ node: Node, what: String, minimum: Int, maximum: Int? = nil) -> Located<Int>? {
        let range = maximum.map { "from \(minimum) to \($0)" } ?? "(\(minimum) or more)"
        guard let text = node.scalar, !node.isNull else {
            error(node.mark, "\(what) must be a whole number \(range), got \(node.typeDescription)")
            return nil
        }
        guard let n = Int(text.trimmingWhitespace()), n >= minimum, n <= maximum ?? .max else {
            error(node.mark, "\(what) must be a whole number \(range), got '\(text)'")
            return nil
        }
        return Located(n, at: node.mark, in: file)
    }

    /// A size such as `40GB`, in bytes.
    fileprivate mutating func size(_ node: Node, what: String) -> Located<Int64>? {
        guard let text = string(node, what: what) else { return nil }
        guard let bytes = parseByteSize(text.value) else {
            error(node.mark, "\(what) must be a size like 16GB or 512MB, got '\(text.value)'")
            return nil
        }
        return Located(bytes, at: node.mark, in: file)
    }
}
