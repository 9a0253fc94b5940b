/// The keys a workflow may have.
public let workflowKeys = ["name", "help", "image", "depends-on", "commands", "artifacts", "environment",
                           "working_dir", "resources", "labels", "retry", "max_duration", "secrets", "slurm"] + providerKeys

extension Project {
    /// The valid workflows, and the names of all workflows written, broken ones included, so that a broken
    /// workflow is not reported a second time as an unknown dependency.
    static func parseWorkflowsFile(_ root: Node, _ r: inout NodeReader) -> (workflows: [Workflow], names: [String]) {
        let errorsBefore = r.diagnostics.count
        guard let top = r.mapping(root, what: "workflows.yaml", allowed: ["workflows"]) else { return ([], []) }
        guard let list = top.first(where: { $0.name == "workflows" }) else {
            // An unknown key reported just now (`workflow:`) already says what is missing.
            if r.diagnostics.count == errorsBefore { r.error(root.mark, "missing 'workflows:' list") }
            return ([], [])
        }
        guard let items = list.value.sequence else {
            r.error(list.value.mark, "'workflows' must be a list of workflows ('- name: ...' items), got \(list.value.typeDescription)")
            return ([], [])
        }
        var names: [String] = []
        let workflows = items.compactMap { parseWorkflow($0, &r, names: &names) }
        return (workflows, names)
    }

    static func parseWorkflow(_ node: Node, _ r: inout NodeReader, names: inout [String]) -> Workflow? {
        guard let pairs = r.mapping(node, what: "a workflow", allowed: workflowKeys + unsupportedWorkflowKeys.keys) else { return nil }
        let errorsBefore = r.diagnostics.count
        // Keys the unknown ones were taken for (`comands`), so they are not also reported as missing.
        let suggested = Set((node.mapping ?? []).compactMap { pair in
            pair.key.scalar.flatMap { workflowKeys.contains($0) ? nil : closestMatch(to: $0, in: workflowKeys) }
        })
        var name: Located<String>?
        var help: String?
        var image: Located<String>?
        var deps: [Dependency] = []
        var commands: [Located<String>]?
        var artifacts: [Located<String>] = []
        var environment: [EnvironmentEntry] = []
        var workingDir: Located<String>?
        var resources = ResourceSpec()
        var labels: [String] = []
        var retryLimit = 0
        var maxDuration: Double?
        var secrets: [Located<String>] = []
        var slurm: SlurmWorkflowOptions?

        for (key, _, value) in pairs {
            switch key {
            case "name":
                name = r.string(value, what: "'name'")
                if let n = name {
                    names.append(n.value)
                    if !Template.isValidName(n.value) {
                        r.error(value.mark, "workflow name '\(n.value)' must start with a letter or '_' and hold only letters, digits, '_' and '-'")
                    }
                }
            case "help": help = r.string(value, what: "'help'")?.value
            case "image": image = r.string(value, what: "'image'")
            case "depends-on":
                for item in r.stringList(value, what: "'depends-on'") ?? [] {
                    let parts = item.value.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                        .map(String.init)
                    if parts[0].isEmpty || (parts.count == 2 && !Template.isValidName(parts[1])) {
                        r.error(item.mark, "'\(item.value)' is not a dependency; write a workflow name or 'workflow:tag'")
                        continue
                    }
                    deps.append(Dependency(workflow: parts[0], tag: parts.count == 2 ? parts[1] : nil,
                                           mark: item.mark, file: r.file))
                }
            case "commands":
                commands = r.stringList(value, what: "'commands'")
                // Only a list written empty is empty; items already reported as wrong do not count.
                if commands != nil, value.isNull || value.sequence?.isEmpty == true {
                    r.error(value.mark, "'commands' is empty; a workflow needs at least one command")
                }
            case "artifacts":
                artifacts = parseArtifacts(value, &r)
                for a in artifacts {
                    if let problem = relativePathProblem(a.value) {
                        r.error(a.mark, "artifact path '\(a.value)' \(problem); artifacts are paths relative to the repository root")
                    }
                }
            case "environment":
                guard let env = r.mapping(value, what: "'environment'") else { break }
                for (envName, envKey, envValue) in env {
                    if !isEnvironmentName(envName) {
                        r.error(envKey.mark, "'\(envName)' is not a valid environment variable name (letters, digits and '_', not starting with a digit)")
                    }
                    if let v = r.string(envValue, what: "the value of '\(envName)'") {
                        environment.append(EnvironmentEntry(name: envName, value: v))
                    }
                }
            case "working_dir":
                workingDir = r.string(value, what: "'working_dir'")
                if let w = workingDir, let problem = relativePathProblem(w.value) {
                    r.error(value.mark, "working_dir '\(w.value)' \(problem); it is relative to the repository root")
                }
            case "resources":
                resources = parseResources(value, &r)
            case "labels":
                labels = (r.stringList(value, what: "'labels'") ?? []).map(\.value)
            case "retry":
                guard let retry = r.mapping(value, what: "'retry'", allowed: ["limit"]) else { break }
                for (_, _, limit) in retry {
                    if let text = r.string(limit, what: "'retry.limit'")?.value {
                        if let n = Int(text), n >= 0 { retryLimit = n } else {
                            r.error(limit.mark, "retry limit must be a whole number (0 or more), got '\(text)'")
                        }
                    }
                }
            case "max_duration":
                if let text = r.string(value, what: "'max_duration'")?.value {
                    if let seconds = parseDuration(text), seconds > 0 { maxDuration = seconds } else {
                        r.error(value.mark, "max_duration must be a duration like 90s, 30m, 2h or 1d, got '\(text)'")
                    }
                }
            case "secrets":
                secrets = parseSecretNames(value, &r)
            case "slurm":
                slurm = parseSlurmOptions(value, &r)
            default: break
            }
        }
        let (provider, python) = parseProvider(pairs, &r, commands: &commands, image: image, workflow: node)
        for secret in secrets where environment.contains(where: { $0.name == secret.value }) {
            r.error(secret.mark, "'\(secret.value)' is both a secret and an 'environment' entry; remove it from 'environment' (its value would be stored)")
        }
        guard let name else {
            if !suggested.contains("name"), r.diagnostics.count == errorsBefore || !pairs.contains(where: { $0.name == "name" }) {
                r.error(node.mark, "workflow is missing 'name'")
            }
            return nil
        }
        guard let commands else {
            if !suggested.contains("commands"), !pairs.contains(where: { $0.name == "commands" }) {
                r.error(node.mark, "workflow '\(name.value)' is missing 'commands'")
            }
            return nil
        }
        var workflow = Workflow(name: name, help: help, image: image, dependsOn: deps, commands: commands,
                                artifacts: artifacts, environment: environment, workingDir: workingDir, resources: resources)
        workflow.labels = labels
        workflow.retryLimit = retryLimit
        workflow.maxDuration = maxDuration
        workflow.provider = provider
        workflow.python = python
        workflow.secrets = secrets
        workflow.slurm = slurm
        return workflow
    }

    static func parseResources(_ node: Node, _ r: inout NodeReader) -> ResourceSpec {
        var spec = ResourceSpec()
        guard let pairs = r.mapping(node, what: "'resources'", allowed: ["gpu", "cpu", "memory"]) else { return spec }
        for (key, _, value) in pairs {
            switch key {
            case "gpu":
                if value.mapping != nil {
                    guard let gpu = r.mapping(value, what: "'gpu'", allowed: ["count", "name", "memory"]) else { break }
                    for (gk, _, gv) in gpu {
                        let s = scalarValue(gv, what: "gpu \(gk)", &r)
                        switch gk {
                        case "count": spec.gpuCount = s; checkInteger(s, what: "gpu count", &r)
                        case "name": spec.gpuName = s
                        default: spec.gpuMemory = s; checkSize(s, what: "gpu memory", &r)
                        }
                    }
                } else {
                    spec.gpuCount = scalarValue(value, what: "'gpu'", &r)
                    checkInteger(spec.gpuCount, what: "'gpu'", &r)
                }
            case "cpu":
                spec.cpu = scalarValue(value, what: "'cpu'", &r)
                checkInteger(spec.cpu, what: "'cpu'", minimum: 1, &r)
            default:
                spec.memory = scalarValue(value, what: "'memory'", &r)
                checkSize(spec.memory, what: "'memory'", &r)
            }
        }
        return spec
    }

    private static func scalarValue(_ node: Node, what: String, _ r: inout NodeReader) -> Located<String>? {
        r.string(node, what: what)
    }

    /// Checks a literal value now; templated ones (`${{ gpu }}`, `$gpu`) are checked once substituted.
    private static func checkInteger(_ value: Located<String>?, what: String, minimum: Int = 0, _ r: inout NodeReader) {
        guard let value, !value.value.contains("$") else { return }
        guard let number = Int(value.value), number >= minimum else {
            let range = minimum == 0 ? "" : " (\(minimum) or more)"
            r.error(value.mark, "\(what) must be a whole number\(range), got '\(value.value)'")
            return
        }
    }

    private static func checkSize(_ value: Located<String>?, what: String, _ r: inout NodeReader) {
        guard let value, !value.value.contains("$") else { return }
        if parseByteSize(value.value) == nil {
            r.error(value.mark, "\(what) must be a size like 16GB or 512MB, got '\(value.value)'")
        }
    }

    /// The variables; groups are checked against `workflowNames` unless it is nil (the workflows file is unreadable).
    static func parseVariablesFile(_ root: Node, _ r: inout NodeReader, workflowNames: [String]?) -> VariableTable {
        var table = VariableTable()
        guard let top = r.mapping(root, what: "variables.yaml", allowed: ["variables"]) else { return table }
        guard let section = top.first(where: { $0.name == "variables" }) else { return table }
        if section.value.isNull { return table }
        guard let groups = r.mapping(section.value, what: "'variables'") else { return table }
        for (group, key, value) in groups {
            if group != "global", let workflowNames, !workflowNames.contains(group) {
                r.error(key.mark, "variables for unknown workflow '\(group)'\(didYouMean(group, ["global"] + workflowNames)); use 'global' or a workflow name")
                continue
            }
            guard let vars = r.mapping(value, what: "the variables of '\(group)'") else { continue }
            var list: [VariableDefault] = []
            for (name, nameNode, v) in vars {
                if !Template.isValidName(name) {
                    r.error(nameNode.mark, "'\(name)' is not a valid variable name (letters, digits, '_' and '-', starting with a letter or '_')")
                    continue
                }
                if builtinVariables.contains(name) {
                    r.error(nameNode.mark, "'\(name)' is a builtin variable and cannot be redefined")
                    continue
                }
                guard let text = v.scalar else {
                    r.error(v.mark, "variable '\(name)' must be a single value (string or number), got \(v.typeDescription)")
                    // Still declared, so its uses are not reported as unknown too; the load fails anyway.
                    list.append(VariableDefault(name: name, value: Located("", at: v.mark, in: r.file)))
                    continue
                }
                list.append(VariableDefault(name: name, value: Located(v.isNull ? "" : text, at: v.mark, in: r.file)))
            }
            if group == "global" { table.global = list } else { table.perWorkflow[group] = list }
        }
        return table
    }
}

/// Parses durations like `90s`, `30m`, `2h`, `1d`, `1h30m` or a plain number of seconds.
public func parseDuration(_ text: String) -> Double? {
    let t = text.trimmingWhitespace().lowercased()
    if let plain = Double(t) { return plain }
    var total = 0.0
    var number = ""
    for ch in t {
        if ch.isNumber || ch == "." { number.append(ch); continue }
        guard let value = Double(number) else { return nil }
        switch ch {
        case "s": total += value
        case "m": total += value * 60
        case "h": total += value * 3600
        case "d": total += value * 86400
        default: return nil
        }
        number = ""
    }
    return number.isEmpty && total > 0 ? total : nil
}

/// Formats seconds the way durations are written: `90s`, `30m`, `2h`, `1h30m`.
public func formatDuration(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    if s % 3600 == 0, s >= 3600 { return "\(s / 3600)h" }
    if s > 3600 { return "\(s / 3600)h\((s % 3600) / 60)m" }
    if s % 60 == 0, s >= 60 { return "\(s / 60)m" }
    return "\(s)s"
}

/// Why `path` is not a safe relative path inside the repository, or nil when it is.
public func relativePathProblem(_ path: String) -> String? {
    if path.isEmpty { return "is empty" }
    if path.hasPrefix("/") || path.hasPrefix("~") { return "is absolute" }
    var depth = 0
    for component in path.split(separator: "/") {
        switch component {
        case ".": continue
        case "..":
            depth -= 1
            if depth < 0 { return "escapes the repository with '..'" }
        default: depth += 1
        }
    }
    return nil
}

/// Normalises a safe relative path: no `.` components, no empty ones, no trailing slash.
public func normalizedRelativePath(_ path: String) -> String {
    var parts: [Substring] = []
    for component in path.split(separator: "/") {
        switch component {
        case ".": continue
        case "..": if !parts.isEmpty { parts.removeLast() }
        default: parts.append(component)
        }
    }
    return parts.joined(separator: "/")
}

/// True for a POSIX environment variable name.
public func isEnvironmentName(_ name: String) -> Bool {
    guard let first = name.first, first == "_" || (first.isASCII && first.isLetter) else { return false }
    return name.allSatisfy { $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }
}

extension Project {
    /// `secrets: [NAME, ...]`: environment variable names, each once.
    static func parseSecretNames(_ node: Node, _ r: inout NodeReader) -> [Located<String>] {
        var names: [Located<String>] = []
        for item in r.stringList(node, what: "'secrets'") ?? [] {
            if !isEnvironmentName(item.value) {
                r.error(item.mark, "secret name '\(item.value)' is not a valid environment variable name (letters, digits and '_', not starting with a digit)")
            } else if names.contains(where: { $0.value == item.value }) {
                r.error(item.mark, "secret '\(item.value)' is listed twice")
            } else {
                names.append(item)
            }
        }
        return names
    }
}
