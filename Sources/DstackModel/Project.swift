/// A loaded, validated project: its workflows and variables. Building one is pure; reading files is the caller's.
public struct Project: Sendable {
    /// The workflows, in file order.
    public var workflows: [Workflow]
    /// The variables and their defaults.
    public var variables: VariableTable
    /// The files they came from, for errors found later (at plan time).
    public var sources: SourceSet
    /// Workflow positions by name (the first, where names repeat), so lookups stay constant-time on big files.
    private var index: [String: Int]

    /// Creates a project from parts already validated.
    public init(workflows: [Workflow], variables: VariableTable, sources: SourceSet) {
        self.workflows = workflows
        self.variables = variables
        self.sources = sources
        var index: [String: Int] = [:]
        for (i, wf) in workflows.enumerated() where index[wf.name.value] == nil { index[wf.name.value] = i }
        self.index = index
    }

    /// The workflow called `name`.
    public func workflow(named name: String) -> Workflow? {
        index[name].map { workflows[$0] }
    }

    /// The names of all workflows, in file order.
    public var workflowNames: [String] { workflows.map(\.name.value) }

    /// Parses and validates the two files; every problem found is reported at once, each with its location.
    ///
    /// `workflows` is required; `variables` may be nil when the project has no variables file.
    public static func load(workflows: SourceFile, variables: SourceFile?) throws(ConfigError) -> Project {
        var sources = SourceSet([workflows])
        var diagnostics: [Diagnostic] = []

        var wfReader = NodeReader(workflows)
        var parsed: [Workflow] = []
        var declared: [String]? = []
        do {
            if let root = try YAMLReader.parse(workflows) {
                (parsed, declared) = parseWorkflowsFile(root, &wfReader)
            } else {
                wfReader.error(Mark(line: 1, column: 1), "the file is empty; it needs a 'workflows:' list (run 'dstack init' for an example)")
                declared = nil
            }
        } catch {
            wfReader.diagnostics.append(error)
            declared = nil  // unreadable: the variables file cannot be checked against its names
        }
        diagnostics += wfReader.diagnostics

        var table = VariableTable()
        if let variables {
            sources.files[variables.displayName] = variables
            var reader = NodeReader(variables)
            do {
                if let root = try YAMLReader.parse(variables) {
                    table = parseVariablesFile(root, &reader, workflowNames: declared)
                }
            } catch {
                reader.diagnostics.append(error)
            }
            diagnostics += reader.diagnostics
        }

        let project = Project(workflows: parsed, variables: table, sources: sources)
        diagnostics += project.semanticDiagnostics(declared: Set(declared ?? []))
        guard diagnostics.isEmpty else {
            // In file order: the workflows file first, each file by position, ties kept as found.
            var rank = [workflows.displayName: 0]
            if let variables, rank[variables.displayName] == nil { rank[variables.displayName] = 1 }
            let ordered = diagnostics.enumerated().sorted { a, b in
                let ka = (rank[a.element.file] ?? 2, a.element.mark.line, a.element.mark.column, a.offset)
                let kb = (rank[b.element.file] ?? 2, b.element.mark.line, b.element.mark.column, b.offset)
                return ka < kb
            }
            throw ConfigError(ordered.map(\.element))
        }
        return project
    }

    /// Checks that span workflows: unique names, known dependencies, no cycles, well-formed and known variables.
    ///
    /// `declared` holds every workflow name written, broken workflows included, so they are not also unknown.
    private func semanticDiagnostics(declared: Set<String>) -> [Diagnostic] {
        var out: [Diagnostic] = []
        var reportedClashes = Set<Mark>()
        var firstByName: [String: Located<String>] = [:]
        for wf in workflows {
            if let first = firstByName[wf.name.value] {
                out.append(sources.diagnostic(wf.name, "duplicate workflow name '\(wf.name.value)' (first defined at line \(first.mark.line)); names must be unique"))
            } else {
                firstByName[wf.name.value] = wf.name
            }
        }
        let names = workflowNames
        for wf in workflows {
            for dep in wf.dependsOn where firstByName[dep.workflow] == nil && !declared.contains(dep.workflow) {
                out.append(sources.diagnostic(file: dep.file, mark: dep.mark,
                    "unknown workflow '\(dep.workflow)' in depends-on of '\(wf.name.value)'\(didYouMean(dep.workflow, names))"))
            }
            out += environmentClashes(wf, reported: &reportedClashes)
            let visible = Set(variables.visible(to: wf.name.value).map(\.name)).union(builtinVariables)
            for value in wf.templatedValues {
                let template: Template
                do {
                    template = try Template(value.value)
                } catch {
                    out.append(sources.diagnostic(file: value.file, mark: markOfReference(value, offset: error.offset),
                        "\(error.message) in workflow '\(wf.name.value)'"))
                    continue
                }
                for case .variable(let name, let offset) in template.parts where !visible.contains(name) {
                    let candidates = Array(visible).sorted()
                    out.append(sources.diagnostic(file: value.file, mark: markOfReference(value, offset: offset),
                        "unknown variable '\(name)' in workflow '\(wf.name.value)'\(didYouMean(name, candidates)); define it under 'global' or '\(wf.name.value)' in .dstack/variables.yaml"))
                }
            }
        }
        if out.isEmpty, let cycle = findCycle() {
            let path = cycle.map(\.name.value).joined(separator: " -> ")
            let closing = cycle[cycle.count - 2]
            let dep = closing.dependsOn.first { $0.workflow == cycle.last!.name.value && $0.tag == nil }!
            out.append(sources.diagnostic(file: dep.file, mark: dep.mark, "dependency cycle: \(path)"))
        }
        return out
    }

    /// Variables whose environment names collide (`batch-size` and `batch_size` are both `BATCH_SIZE`), or would
    /// replace what the shell and dstack rely on (`path` would become `PATH`).
    private func environmentClashes(_ wf: Workflow, reported: inout Set<Mark>) -> [Diagnostic] {
        var out: [Diagnostic] = []
        var byEnvironmentName: [String: VariableDefault] = [:]
        for v in variables.visible(to: wf.name.value) {
            let env = v.environmentName
            if let other = byEnvironmentName[env], other.name != v.name, reported.insert(v.value.mark).inserted {
                out.append(sources.diagnostic(v.value, "variables '\(other.name)' and '\(v.name)' would both be exported as \(env) to '\(wf.name.value)'; rename one"))
            }
            byEnvironmentName[env] = v
            if reservedEnvironmentNames.contains(env) || env.hasPrefix("DSTACK_") || env.hasPrefix("LD_"),
               reported.insert(v.value.mark).inserted {
                out.append(sources.diagnostic(v.value, "variable '\(v.name)' would be exported as \(env), which the job's shell needs; rename it"))
            }
        }
        return out
    }

    /// The position of a `${{` inside a single-line value, found in the source line; the value's start otherwise.
    private func markOfReference(_ value: Located<String>, offset: Int) -> Mark {
        guard let line = sources.files[value.file]?.line(value.mark.line) else { return value.mark }
        let chars = Array(line)
        let start = value.mark.column - 1
        guard start < chars.count else { return value.mark }
        let quoted = chars[start] == "\"" || chars[start] == "'"
        let column = start + (quoted ? 1 : 0) + offset
        let raw = Array(value.value)
        // Only trust the computed column when the source there really holds the reference.
        if column + 3 <= chars.count, chars[column..<column + 3] == raw[offset..<offset + 3] {
            return Mark(line: value.mark.line, column: column + 1)
        }
        return value.mark
    }

    /// A dependency cycle as a path that returns to its start, or nil.
    private func findCycle() -> [Workflow]? {
        var state: [String: Int] = [:]  // 1 = on the stack, 2 = done
        var stack: [Workflow] = []
        func visit(_ wf: Workflow) -> [Workflow]? {
            state[wf.name.value] = 1
            stack.append(wf)
            for dep in wf.dependsOn where dep.tag == nil {
                guard let next = workflow(named: dep.workflow) else { continue }
                switch state[next.name.value] {
                case 1:
                    let start = stack.firstIndex { $0.name.value == next.name.value }!
                    return Array(stack[start...]) + [next]
                case nil:
                    if let found = visit(next) { return found }
                default: break
                }
            }
            stack.removeLast()
            state[wf.name.value] = 2
            return nil
        }
        for wf in workflows where state[wf.name.value] == nil {
            if let cycle = visit(wf) { return cycle }
        }
        return nil
    }
}
