/// Keys of early dstack's providers (`provider: python` and friends), read by `Project.parseProvider`.
public let providerKeys = ["provider", "script", "python_script", "file", "args", "requirements", "python", "version",
                           "before_run"]

/// Keys of early dstack's workflow files that this project does not take, and what to write instead.
public let unsupportedWorkflowKeys: [String: String] = [
    "template": "'template' (early dstack's nesting of February 2022) is not supported; move its keys up into the workflow",
    "gpu": "'gpu' belongs under 'resources' (resources: {gpu: 1})",
    "env": "'env' (a list of NAME=value, dstack 0.0.x) is not supported; write 'environment:' as a mapping (NAME: value)",
    "deps": "'deps' (dstack 0.0.x) is not supported; write 'depends-on:' with workflow names, or 'workflow:tag' for a tagged run",
    "ports": "'ports' is not supported yet: runners here do not expose ports",
    "nodes": "'nodes' (multi-node jobs) is not supported yet",
]

extension Project {
    /// Reads the provider keys of a workflow: checks them against its `provider`, puts `before_run` ahead of the
    /// commands (a Python script's workflow has only those), and returns the provider and the Python spec.
    ///
    /// Without `provider:`, a workflow is as before: these keys are errors that say which provider takes them.
    static func parseProvider(_ pairs: [(name: String, key: Node, value: Node)], _ r: inout NodeReader,
                              commands: inout [Located<String>]?, image: Located<String>?,
                              workflow node: Node) -> (provider: Located<String>?, python: PythonSpec?) {
        var values: [String: (key: Node, value: Node)] = [:]
        for (name, key, value) in pairs {
            if let message = unsupportedWorkflowKeys[name] {
                r.error(key.mark, message)
                // Its commands are likely inside it: not also missing.
                if name == "template" { commands = commands ?? [] }
            } else if providerKeys.contains(name) {
                values[name] = (key, value)
            }
        }
        guard !values.isEmpty else { return (nil, nil) }

        var provider: Provider?
        var written: Located<String>?
        if let value = values["provider"]?.value, let name = r.string(value, what: "'provider'") {
            written = name
            provider = Provider(rawValue: name.value)
            if provider == nil {
                let known = Provider.allCases.map(\.rawValue)
                let hint = Provider.notSupported.contains(name.value) ? "" : didYouMean(name.value, known)
                r.error(value.mark, "provider '\(name.value)' is not supported yet\(hint); use 'bash', 'docker' or 'python'")
                commands = commands ?? []  // such providers took no commands: they are not also missing
                return (written, nil)
            }
        }
        // Each key, and the providers that take it.
        let takers: [String: [Provider]] = [
            "script": [.python], "python_script": [.python], "file": [.python], "args": [.python], "version": [.python],
            "requirements": [.python, .bash], "python": [.python, .bash], "before_run": [.python, .bash, .docker],
        ]
        for (name, entry) in values.sorted(by: { $0.value.key.mark.line < $1.value.key.mark.line }) where name != "provider" {
            let accepted = takers[name] ?? []
            guard let provider else {
                let list = accepted.map { "'provider: \($0.rawValue)'" }.joined(separator: " or ")
                r.error(entry.key.mark, "'\(name)' is a key of \(list); add that line to the workflow")
                continue
            }
            if !accepted.contains(provider) {
                r.error(entry.key.mark, "'\(name)' is not a key of 'provider: \(provider.rawValue)'")
            }
        }
        guard let provider else { return (written, nil) }

        var before: [Located<String>] = []
        if let value = values["before_run"]?.value {
            before = r.stringList(value, what: "'before_run'") ?? []
        }
        var spec = PythonSpec()
        let versionKeys = ["python", "version"].filter { values[$0] != nil }
        if versionKeys.count == 2, let second = values["version"] {
            r.error(second.key.mark, "'python' and 'version' both give the Python version; keep one")
        }
        if let key = versionKeys.first, let value = values[key]?.value, let version = r.string(value, what: "'\(key)'") {
            // The scalar's text, so `python: 3.10` stays 3.10 (a YAML float would make it 3.1).
            if isPythonVersion(version.value) { spec.version = version } else {
                r.error(value.mark, "'\(key)' must be a Python version like 3.10, got '\(version.value)'")
            }
        }
        if let value = values["requirements"]?.value { spec.requirements = r.string(value, what: "'requirements'") }

        switch provider {
        case .python:
            let scriptKeys = ["script", "python_script", "file"].filter { values[$0] != nil }
            if scriptKeys.count > 1, let extra = values[scriptKeys[1]] {
                r.error(extra.key.mark, "'\(scriptKeys[0])' and '\(scriptKeys[1])' both name the script; keep one")
            }
            if let key = scriptKeys.first, let value = values[key]?.value {
                spec.script = r.string(value, what: "'\(key)'")
            } else {
                r.error(node.mark, "a workflow with 'provider: python' needs 'script' (the Python file to run)")
            }
            if let value = values["args"]?.value {
                if value.sequence != nil {
                    spec.arguments = r.stringList(value, what: "'args'") ?? []
                    spec.argumentsAreWords = true
                } else if let line = r.string(value, what: "'args'") {
                    spec.arguments = [line]
                }
            }
            if let written = commands?.first {
                r.error(written.mark, "'commands' is not a key of 'provider: python' (it runs 'script'); use 'provider: bash' to write commands")
            }
            commands = before
            return (written, spec)
        case .bash:
            if let written = commands { commands = before + written }
            let usesPython = spec.version != nil || spec.requirements != nil
            return (written, usesPython ? spec : nil)
        case .docker:
            if image == nil {
                r.error(node.mark, "a workflow with 'provider: docker' needs 'image'")
            }
            if let written = commands { commands = before + written }
            return (written, nil)
        }
    }

    /// An `artifacts:` list: paths, or early dstack 0.0.x's `{path: PATH}` items (their other keys are refused).
    static func parseArtifacts(_ node: Node, _ r: inout NodeReader) -> [Located<String>] {
        guard let items = node.sequence, items.contains(where: { $0.mapping != nil }) else {
            return r.stringList(node, what: "'artifacts'") ?? []
        }
        var out: [Located<String>] = []
        for item in items {
            guard item.mapping != nil else {
                if let path = r.string(item, what: "each item of 'artifacts'") { out.append(path) }
                continue
            }
            guard let pairs = r.mapping(item, what: "an artifact", allowed: ["path", "mount"]) else { continue }
            for (name, key, value) in pairs {
                if name == "path" {
                    if let path = r.string(value, what: "'path'") { out.append(path) }
                } else {
                    r.error(key.mark, "'\(name)' (dstack 0.0.x's artifacts mounted between jobs) is not supported; an artifact here is a path")
                }
            }
            if !pairs.contains(where: { $0.name == "path" }) { r.error(item.mark, "an artifact needs 'path'") }
        }
        return out
    }
}

/// True for a Python version as workflows write it: `3.10`, `3.8`.
public func isPythonVersion(_ text: String) -> Bool {
    let parts = text.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 2 && parts[0] == "3" && !parts[1].isEmpty && parts[1].count <= 2
        && parts[1].allSatisfy { $0.isASCII && $0.isNumber }
}
