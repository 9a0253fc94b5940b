/// The runner kinds an inventory knows: `ssh` (the default: dstack starts the jobs) and `slurm` (a cluster's
/// login node, where dstack submits them with `sbatch`).
public let runnerKinds = ["ssh", "slurm"]

/// The runner keys only a runner of `kind: slurm` may hold.
public let slurmRunnerKeys = ["partition", "account", "qos", "time"]

/// The runner's `kind:` and Slurm settings, read as the runner's other keys are.
struct SlurmFields {
    var kind: Located<String>?
    var values: [String: Located<String>] = [:]

    /// Reads `kind` or one of `slurmRunnerKeys`.
    mutating func read(_ key: String, _ value: Node, _ r: inout NodeReader) {
        guard let text = r.string(value, what: "'\(key)'") else { return }
        if key == "kind" {
            guard runnerKinds.contains(text.value) else {
                r.error(value.mark, "unknown runner kind '\(text.value)'\(didYouMean(text.value, runnerKinds)); "
                        + "write 'ssh' (the default) or 'slurm'")
                return
            }
            kind = text
            return
        }
        let problem = key == "time" ? SbatchOptions.timeProblem(text.value).map { "'time' \($0)" }
            : SbatchOptions.nameProblem(text.value, what: "'\(key)'")
        if let problem {
            r.error(value.mark, problem)
            return
        }
        values[key] = text
    }

    /// The Slurm settings of a runner of kind `slurm` (nil for an SSH runner); Slurm keys on an SSH runner are
    /// reported where they were written.
    func settings(_ r: inout NodeReader) -> SlurmSettings? {
        guard kind?.value == "slurm" else {
            for key in slurmRunnerKeys {
                if let value = values[key] {
                    r.error(value.mark, "'\(key)' is for runners of kind 'slurm'; add 'kind: slurm' to this runner or remove '\(key)'")
                }
            }
            return nil
        }
        return SlurmSettings(partition: values["partition"]?.value, account: values["account"]?.value,
                             qos: values["qos"]?.value, time: values["time"]?.value)
    }
}

extension Project {
    /// Reads a workflow's `slurm: {partition:, constraint:, extra: [...]}`.
    static func parseSlurmOptions(_ node: Node, _ r: inout NodeReader) -> SlurmWorkflowOptions? {
        guard let pairs = r.mapping(node, what: "'slurm'", allowed: ["partition", "constraint", "extra"]) else { return nil }
        var options = SlurmWorkflowOptions()
        var ok = true
        for (key, _, value) in pairs {
            switch key {
            case "extra":
                for item in r.stringList(value, what: "'slurm.extra'") ?? [] {
                    if let problem = SbatchOptions.extraProblem(item.value) {
                        r.error(item.mark, "slurm extra option \(problem)")
                        ok = false
                    } else {
                        options.extra.append(item.value)
                    }
                }
            default:
                guard let text = r.string(value, what: "'slurm.\(key)'") else { ok = false; continue }
                if let problem = SbatchOptions.nameProblem(text.value, what: "'slurm.\(key)'") {
                    r.error(value.mark, problem)
                    ok = false
                } else if key == "partition" {
                    options.partition = text.value
                } else {
                    options.constraint = text.value
                }
            }
        }
        return ok ? options : nil
    }
}
