import Crypto
import DstackModel
import DstackRunners
import Foundation

/// Turns a workflow and its dependencies into a plan: resolved variables, substituted values, cache keys.
///
/// Planning is pure and linear in jobs + edges; storage lookups (tags, cache) are done by the caller.
public struct Planner: Sendable {
    /// The loaded project.
    public var project: Project

    /// Creates a planner over `project`.
    public init(project: Project) {
        self.project = project
    }

    /// The workflow plus its runtime dependencies (not tag dependencies), dependencies first.
    public func closure(of target: String) throws(ConfigError) -> [Workflow] {
        guard project.workflow(named: target) != nil else {
            throw ConfigError(message: "unknown workflow '\(target)'\(didYouMean(target, project.workflowNames)); 'dstack run --help' lists them")
        }
        var order: [Workflow] = []
        var seen: Set<String> = [target]
        // Iterative depth-first post-order over names (no struct copies on the stack), so deep chains cannot
        // overflow the stack and 10,000-job plans stay fast.
        var stack: [(name: String, next: Int)] = [(target, 0)]
        while let top = stack.last {
            let deps = project.workflow(named: top.name)!.dependsOn
            var next = top.next
            while next < deps.count, deps[next].tag != nil || seen.contains(deps[next].workflow)
                    || project.workflow(named: deps[next].workflow) == nil {
                next += 1
            }
            if next < deps.count {
                stack[stack.count - 1].next = next + 1
                seen.insert(deps[next].workflow)
                stack.append((deps[next].workflow, 0))
            } else {
                order.append(project.workflow(named: top.name)!)
                stack.removeLast()
            }
        }
        return order
    }

    /// Every variable the workflows of `closure` see, with its default, for `dstack run WF --help`.
    public func variables(for closure: [Workflow]) -> [VariableDefault] {
        var seen = Set<String>()
        var out: [VariableDefault] = []
        for wf in closure {
            for v in project.variables.visible(to: wf.name.value) where seen.insert(v.name).inserted {
                out.append(v)
            }
        }
        return out
    }

    /// Plans a run of `target` named `runName`; `tags` resolves each `workflow:tag` dependency.
    public func plan(_ target: String, overrides: [String: String], snapshotId: String, runName: String,
                     tags: [String: TagDependency]) throws(ConfigError) -> Plan {
        let workflows = try closure(of: target)
        var keys: [String: String] = [:]
        var jobs: [PlannedJob] = []
        jobs.reserveCapacity(workflows.count)
        for wf in workflows {
            let name = wf.name.value
            let jobId = "\(runName)-\(name)"
            var values: [String: String] = [:]
            for v in project.variables.visible(to: name) {
                values[v.name] = overrides[v.name] ?? v.value.value
            }
            let variables = values
            // `$variables_as_args`: every variable the workflow sees, in the order they were declared.
            let arguments = project.variables.visible(to: name).map { (name: $0.name, value: values[$0.name] ?? "") }
            // Cache keys see builtins as written, so a run's name never makes its results unique.
            var keyValues = values
            for builtin in builtinVariables { keyValues[builtin] = "${{ \(builtin) }}" }
            values["run_name"] = runName
            values["job_id"] = jobId
            values[Template.argumentsVariable] = Template.argumentsText(arguments)
            // Early dstack's `$name` references stand for these names in commands; any other `$NAME` is the shell's.
            let declared = Set(values.keys)

            func render(_ l: Located<String>, shell: Bool = false, _ vals: [String: String]) throws(ConfigError) -> String {
                do {
                    if shell { return try Template(l.value, declared: declared, shell: true).renderShell(vals, arguments: arguments) }
                    return try Template(l.value).render(vals)
                } catch {
                    throw ConfigError([project.sources.diagnostic(l, error.message)])
                }
            }
            var commands: [String] = []
            var keyCommands: [String] = []
            for c in wf.commands {
                commands.append(try render(c, shell: true, values))
                keyCommands.append(try render(c, shell: true, keyValues))
            }
            var artifacts: [String] = []
            for a in wf.artifacts {
                let path = try render(a, values)
                if let problem = relativePathProblem(path) {
                    throw ConfigError([project.sources.diagnostic(a, "artifact path '\(path)' \(problem); artifacts are paths relative to the repository root")])
                }
                artifacts.append(normalizedRelativePath(path))
            }
            var workingDir = ""
            if let w = wf.workingDir {
                workingDir = try render(w, values)
                if let problem = relativePathProblem(workingDir) {
                    throw ConfigError([project.sources.diagnostic(w, "working_dir '\(workingDir)' \(problem); it is relative to the repository root")])
                }
                workingDir = normalizedRelativePath(workingDir)
            }
            let image = try wf.image.map { l throws(ConfigError) in try render(l, values) }
            var environment: [String: String] = [:]
            var keyEnvironment: [String: String] = [:]
            for (variable, value) in variables { environment[environmentName(for: variable)] = value }
            keyEnvironment = environment
            for entry in wf.environment {
                environment[entry.name] = try render(entry.value, values)
                keyEnvironment[entry.name] = try render(entry.value, keyValues)
            }
            environment["DSTACK_RUN_NAME"] = runName
            environment["DSTACK_JOB_ID"] = jobId
            environment["DSTACK_WORKFLOW"] = name
            let resources = try Resources.resolve(wf.resources, values: values, sources: project.sources)
            var python: PythonNeed?
            if let spec = wf.python {
                // The environment first (it installs the requirements), then `before_run` and commands, then the script.
                let requirements = try spec.requirements.map { l throws(ConfigError) in try render(l, values) }
                let prelude = PythonEnvironment.prelude(version: spec.version?.value, requirements: requirements)
                commands.insert(prelude, at: 0)
                keyCommands.insert(prelude, at: 0)
                if let script = spec.script, let line = spec.command {
                    let command = Located(line, at: script.mark, in: script.file)
                    commands.append(try render(command, shell: true, values))
                    keyCommands.append(try render(command, shell: true, keyValues))
                }
                let gpuImage = image == nil && resources.gpu > 0 ? PythonEnvironment.gpuImage(version: spec.version?.value) : nil
                python = PythonNeed(version: spec.version?.value, image: gpuImage)
            }

            var tagDeps: [TagDependency] = []
            for dep in wf.dependsOn {
                guard let tag = dep.tag else { continue }
                guard let resolved = tags[dep.spelled] else {
                    throw ConfigError([project.sources.diagnostic(file: dep.file, mark: dep.mark,
                        "no stored results for '\(dep.spelled)'; tag a finished run of '\(dep.workflow)' with 'dstack tags add \(tag) RUN'")])
                }
                tagDeps.append(resolved)
            }
            let runtimeDeps = wf.dependsOn.filter { $0.tag == nil }.map(\.workflow)
            let key = CacheKey.compute(
                workflow: name, image: image, commands: keyCommands, environment: keyEnvironment,
                workingDir: workingDir, artifacts: artifacts, variables: variables, snapshotId: snapshotId,
                dependencies: runtimeDeps.map { keys[$0]! }, tagDependencies: tagDeps.map(\.cacheKey),
                secretNames: wf.secrets.map(\.value))
            keys[name] = key
            var launch = JobLaunch(jobId: jobId, commands: commands, environment: environment,
                                   workingDir: workingDir, image: image)
            launch.secretNames = wf.secrets.map(\.value)
            launch.slurm = SlurmRequest(resources: resources, maxDuration: wf.maxDuration, options: wf.slurm)
            jobs.append(PlannedJob(
                workflow: name, id: jobId, dependsOn: runtimeDeps, tagDependencies: tagDeps,
                launch: launch,
                artifacts: artifacts, resources: resources, labels: wf.labels, retryLimit: wf.retryLimit,
                maxDuration: wf.maxDuration, variables: variables, cacheKey: key, cached: nil, python: python))
        }
        return Plan(target: target, jobs: jobs)
    }
}

/// The cache key of DESIGN.md §3: sha256 over the substituted workflow, its variables, the code snapshot and the
/// keys of what it depends on. Equal keys mean equal inputs, so a stored result can stand in for a run.
public enum CacheKey {
    /// Computes a key; every list that has no meaningful order is sorted first. `secretNames` are the names of
    /// the secrets the job receives (never their values).
    public static func compute(workflow: String, image: String?, commands: [String], environment: [String: String],
                               workingDir: String, artifacts: [String], variables: [String: String],
                               snapshotId: String, dependencies: [String], tagDependencies: [String],
                               secretNames: [String] = []) -> String {
        var hasher = SHA256()
        func field(_ name: String, _ value: String) {
            // Length-prefixed fields: no value can be crafted to look like another field.
            hasher.update(data: Data("\(name):\(value.utf8.count):\(value)\n".utf8))
        }
        field("version", "1")
        field("workflow", workflow)
        field("image", image ?? "")
        for c in commands { field("command", c) }
        for (k, v) in environment.sorted(by: { $0.key < $1.key }) { field("env", k); field("value", v) }
        field("working_dir", workingDir)
        for a in artifacts { field("artifact", a) }
        for (k, v) in variables.sorted(by: { $0.key < $1.key }) { field("var", k); field("value", v) }
        field("snapshot", snapshotId)
        for d in dependencies.sorted() { field("dep", d) }
        for d in tagDependencies.sorted() { field("tagdep", d) }
        // Names only (a job that needs a new secret is a new job); values never enter a key. No field without
        // secrets, so keys stored before secrets existed stay valid.
        for s in secretNames.sorted() { field("secret", s) }
        return hex(hasher.finalize())
    }
}
