import Foundation

/// One variable default from `.dstack/variables.yaml`.
public struct VariableDefault: Sendable, Hashable {
    /// The variable's name.
    public var name: String
    /// Its default value, where it was written.
    public var value: Located<String>

    /// Creates a default.
    public init(name: String, value: Located<String>) {
        self.name = name
        self.value = value
    }

    /// The environment variable name the job sees: upper case, dashes to underscores (`batch-size` → `BATCH_SIZE`).
    public var environmentName: String { DstackModel.environmentName(for: name) }
}

/// The environment variable name for a dstack variable: upper case, dashes to underscores.
public func environmentName(for variable: String) -> String {
    variable.uppercased().replacingOccurrences(of: "-", with: "_")
}

/// The variables of `.dstack/variables.yaml`: `global` defaults and per-workflow ones.
public struct VariableTable: Sendable, Hashable {
    /// Defaults every workflow sees.
    public var global: [VariableDefault]
    /// Defaults per workflow name; these win over `global`.
    public var perWorkflow: [String: [VariableDefault]]

    /// Creates a table.
    public init(global: [VariableDefault] = [], perWorkflow: [String: [VariableDefault]] = [:]) {
        self.global = global
        self.perWorkflow = perWorkflow
    }

    /// The variables `workflow` sees, by name: global ones overridden by its own, in a stable order.
    public func visible(to workflow: String) -> [VariableDefault] {
        var order: [String] = []
        var byName: [String: VariableDefault] = [:]
        for v in global + (perWorkflow[workflow] ?? []) {
            if byName[v.name] == nil { order.append(v.name) }
            byName[v.name] = v
        }
        return order.map { byName[$0]! }
    }
}

/// Environment names a variable may not take: the job's shell and tools depend on them.
public let reservedEnvironmentNames: Set<String> = ["PATH", "HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "IFS",
                                                    "TMPDIR", "CUDA_VISIBLE_DEVICES"]

/// Names every job can use without declaring them.
public let builtinVariables = ["run_name", "job_id", Template.argumentsVariable]
