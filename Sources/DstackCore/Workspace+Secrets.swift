import DstackModel
import DstackRunners
import Foundation

extension Workspace {
    /// This machine's secret store: `$DSTACK_SECRETS_FILE`, else `~/.dstack/secrets`.
    public var secretStore: any SecretStore {
        let home = environment["HOME"] ?? NSHomeDirectory()
        let file = environment["DSTACK_SECRETS_FILE"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(home)/.dstack/secrets"
        return FileSecretStore(path: URL(fileURLWithPath: file))
    }

    /// Sets the secret `name` of this project on this machine.
    public func addSecret(_ name: String, value: String) throws {
        guard isEnvironmentName(name) else {
            throw CoreError.invalid("'\(name)' is not a valid secret name: secrets reach jobs as environment variables (letters, digits and '_', not starting with a digit)")
        }
        guard !value.isEmpty else {
            throw CoreError.invalid("the value of secret '\(name)' is empty; give it on standard input (dstack secrets add \(name) < file) or at the prompt")
        }
        try secretStore.set(name, value: value, project: projectName)
    }

    /// The names of this project's secrets on this machine.
    public func secretNames() throws -> [String] {
        try secretStore.names(project: projectName)
    }

    /// Removes the secret `name` of this project; not found when it is not set.
    public func deleteSecret(_ name: String) throws {
        guard try secretStore.delete(name, project: projectName) else {
            throw CoreError.notFound("no secret '\(name)' in project '\(projectName)' on this machine; 'dstack secrets list' shows them")
        }
    }

    /// The secret values the workflows of `closure` name; a secret that is not set is a configuration error that
    /// points at where it is named and says how to add it.
    func secretValues(for closure: [Workflow], project: Project) throws -> [String: String] {
        let wanted = closure.flatMap(\.secrets)
        guard !wanted.isEmpty else { return [:] }
        let stored = try secretStore.values(project: projectName)
        var missing: [Diagnostic] = []
        var values: [String: String] = [:]
        for name in wanted {
            if let value = stored[name.value] {
                values[name.value] = value
            } else {
                missing.append(project.sources.diagnostic(name, "secret '\(name.value)' is not set for project '\(projectName)' on this machine; add it with 'dstack secrets add \(name.value)'"))
            }
        }
        if !missing.isEmpty { throw ConfigError(missing) }
        return values
    }

    /// Gives each job of `plan` the values of the secrets it names (after `plan` was read back from storage, which
    /// holds names only); a secret not set on this machine is a configuration error.
    func fillSecrets(_ plan: inout Plan, run: String) throws {
        let wanted = Set(plan.jobs.flatMap(\.launch.secretNames))
        guard !wanted.isEmpty else { return }
        let stored = try secretStore.values(project: projectName)
        if let name = wanted.sorted().first(where: { stored[$0] == nil }) {
            throw ConfigError(message: "run '\(run)' needs secret '\(name)', which is not set for project '\(projectName)' on this machine; add it with 'dstack secrets add \(name)' (secret values stay on the machine they were added on)")
        }
        for i in plan.jobs.indices {
            plan.jobs[i].launch.secretValues = SecretValues(stored.filter { plan.jobs[i].launch.secretNames.contains($0.key) })
        }
    }

    /// Warnings for `environment:` entries and variables of `closure` whose names look like credentials: their
    /// values are stored with every run, in plain text, where everyone who reads the storage sees them.
    public func secretLikeNameWarnings(_ closure: [Workflow], project: Project) -> [String] {
        var warnings: [String] = []
        var seen = Set<String>()
        for wf in closure {
            for entry in wf.environment where looksLikeSecretName(entry.name) && seen.insert(entry.name).inserted {
                warnings.append("workflow '\(wf.name.value)' sets environment variable '\(entry.name)', whose name looks like a credential: 'environment:' values are stored with the run in plain text; list it under 'secrets: [\(entry.name)]' and set it with 'dstack secrets add \(entry.name)'")
            }
            for variable in project.variables.visible(to: wf.name.value) {
                let env = environmentName(for: variable.name)
                guard looksLikeSecretName(env), seen.insert(env).inserted else { continue }
                warnings.append("variable '\(variable.name)' (\(env) in the job) has a name that looks like a credential: variable values are stored with the run in plain text; list '\(env)' under 'secrets:' and set it with 'dstack secrets add \(env)'")
            }
        }
        return warnings
    }
}
