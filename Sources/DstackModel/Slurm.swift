/// A runner of `kind: slurm`: what the inventory says about the cluster behind its login node.
public struct SlurmSettings: Sendable, Hashable, Codable {
    /// The partition jobs go to unless the workflow names one (`--partition`); nil means the cluster's default.
    public var partition: String?
    /// The account jobs are charged to (`--account`).
    public var account: String?
    /// The quality of service (`--qos`).
    public var qos: String?
    /// The time limit of jobs without a `max_duration`, in Slurm's format (`--time`, e.g. `2:00:00`, `1-0`).
    public var time: String?

    /// Creates settings; every value is optional.
    public init(partition: String? = nil, account: String? = nil, qos: String? = nil, time: String? = nil) {
        self.partition = partition
        self.account = account
        self.qos = qos
        self.time = time
    }
}

/// What a workflow asks of Slurm beyond its resources: `slurm: {partition:, constraint:, extra: [...]}`.
public struct SlurmWorkflowOptions: Sendable, Hashable, Codable {
    /// The partition, replacing the runner's.
    public var partition: String?
    /// Node features the job needs (`--constraint`).
    public var constraint: String?
    /// More `sbatch` options, each one word `--name` or `--name=value`, passed as data (never through a shell).
    public var extra: [String]

    /// Creates options.
    public init(partition: String? = nil, constraint: String? = nil, extra: [String] = []) {
        self.partition = partition
        self.constraint = constraint
        self.extra = extra
    }
}

/// Everything a Slurm runner needs beyond the job's commands to submit it: its resolved resources, its
/// `max_duration` and the workflow's `slurm:` options (the plan records it with the job).
public struct SlurmRequest: Sendable, Hashable, Codable {
    /// What the job needs.
    public var resources: Resources
    /// The longest it may run, in seconds.
    public var maxDuration: Double?
    /// The workflow's `slurm:` options, if any.
    public var options: SlurmWorkflowOptions?

    /// Creates a request.
    public init(resources: Resources, maxDuration: Double? = nil, options: SlurmWorkflowOptions? = nil) {
        self.resources = resources
        self.maxDuration = maxDuration
        self.options = options
    }
}

/// A Slurm job as the scheduler last reported it (recorded on the job, shown by `dstack status`).
public struct SlurmJobState: Sendable, Codable, Hashable {
    /// Slurm's job id (`sbatch --parsable`).
    public var id: String
    /// Its state (`PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `TIMEOUT`, `NODE_FAIL`, `PREEMPTED`...).
    public var state: String
    /// Why it is in that state (`Resources`, `Priority`), when Slurm says (`None` is left out).
    public var reason: String?

    /// Creates a state.
    public init(id: String, state: String, reason: String? = nil) {
        self.id = id
        self.state = state
        self.reason = reason
    }

    /// In words, for `dstack status`: `pending (Resources)`, `running`.
    public var summary: String {
        state.lowercased() + (reason.map { " (\($0))" } ?? "")
    }

    /// True for the states in which Slurm will not run the job (any more): it ended, one way or another.
    public var isFinal: Bool {
        !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
          "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"].contains(state)
    }

    /// True when the job ended because of the cluster, not of itself: it is lost and may be tried again.
    public var isLost: Bool {
        ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"].contains(state)
    }
}

/// The `sbatch` options of a job: a pure mapping from what the job needs to Slurm's words (docs/slurm.md).
public enum SbatchOptions {
    /// The options dstack sets itself, which `extra:` may not give.
    public static let reserved = ["--output", "--error", "--input", "--chdir", "--parsable", "--wrap", "--array",
                                  "--requeue", "--no-requeue", "--open-mode", "--job-name", "--test-only", "--wait",
                                  "--export", "--export-file", "--get-user-env", "--batch"]

    /// The options, in order: job name, partition (the workflow's, else the runner's), account, qos, time (from
    /// `max_duration`, else the runner's default), GPUs as a GRES (`--gres=gpu:N`, or `gpu:TYPE:N` with a name),
    /// CPUs per task, memory (MiB, rounded up), constraint, then the workflow's extra options as written.
    public static func arguments(for request: SlurmRequest, settings: SlurmSettings, jobName: String) -> [String] {
        var out = ["--job-name=\(jobName)"]
        let options = request.options
        if let partition = options?.partition ?? settings.partition { out.append("--partition=\(partition)") }
        if let account = settings.account { out.append("--account=\(account)") }
        if let qos = settings.qos { out.append("--qos=\(qos)") }
        if let seconds = request.maxDuration { out.append("--time=\(time(seconds: seconds))") } else if let time = settings.time {
            out.append("--time=\(time)")
        }
        let r = request.resources
        if r.gpu > 0 {
            out.append("--gres=gpu:" + (r.gpuName.map { "\($0):" } ?? "") + "\(r.gpu)")
        }
        if let cpu = r.cpu { out.append("--cpus-per-task=\(cpu)") }
        if let memory = r.memory {
            let mib = (memory + (1 << 20) - 1) >> 20
            out.append("--mem=\(max(1, mib))M")
        }
        if let constraint = options?.constraint { out.append("--constraint=\(constraint)") }
        out += options?.extra ?? []
        return out
    }

    /// A duration in Slurm's `--time` format, rounded up to the minute: `D-HH:MM:00`, or `MM` under an hour.
    public static func time(seconds: Double) -> String {
        let minutes = max(1, Int((seconds / 60).rounded(.up)))
        if minutes < 60 { return "\(minutes)" }
        let days = minutes / 1440
        let hours = (minutes % 1440) / 60
        let rest = minutes % 60
        let clock = (hours < 10 ? "0" : "") + "\(hours):" + (rest < 10 ? "0" : "") + "\(rest):00"
        return days > 0 ? "\(days)-\(clock)" : clock
    }

    /// Why `text` is not a Slurm time limit (`minutes`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`,
    /// `UNLIMITED`, `INFINITE`), or nil when it is.
    public static func timeProblem(_ text: String) -> String? {
        if ["UNLIMITED", "INFINITE"].contains(text.uppercased()) { return nil }
        let bad = "must be a Slurm time limit like 90 (minutes), 1:30:00 or 2-0 (days-hours), got '\(text)'"
        let dayParts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard dayParts.count <= 2 else { return bad }
        let clock = dayParts.last!.split(separator: ":", omittingEmptySubsequences: false)
        let numbers = (dayParts.count == 2 ? [dayParts[0]] : []) + clock
        guard numbers.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }) else { return bad }
        guard clock.count <= 3 else { return bad }
        if numbers.allSatisfy({ Int($0) == 0 }) { return "must be more than zero, got '\(text)'" }
        return nil
    }

    /// Why `option` cannot be an `extra:` sbatch option, or nil when it can.
    public static func extraProblem(_ option: String) -> String? {
        guard option.hasPrefix("--") else {
            return "'\(option)' is not a long sbatch option; write it as --name or --name=value (one item per option)"
        }
        let name = option.split(separator: "=", maxSplits: 1).first.map(String.init) ?? option
        guard name.count > 2, name.dropFirst(2).allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }) else {
            return "'\(option)' is not a long sbatch option; write it as --name or --name=value (one item per option)"
        }
        if option.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) {
            return "'\(name)' holds a line break; give each option as one line"
        }
        if reserved.contains(name) { return "'\(name)' is set by dstack itself; remove it from 'extra'" }
        if ["--partition", "--constraint"].contains(name) {
            return "write '\(name.dropFirst(2))' under 'slurm:' rather than in 'extra'"
        }
        if ["--gres", "--gpus", "--cpus-per-task", "--mem", "--time"].contains(name) {
            return "'\(name)' comes from the workflow's 'resources' and 'max_duration'; set them there"
        }
        return nil
    }

    /// Why `text` cannot be a partition, account, qos or constraint name, or nil when it can.
    public static func nameProblem(_ text: String, what: String) -> String? {
        if text.trimmingWhitespace().isEmpty { return "\(what) is empty; give a value or remove the key" }
        if text.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "\0" || $0 == "\"" || $0 == "'" }) {
            return "\(what) '\(text)' holds a space or a quote; Slurm names have neither"
        }
        return nil
    }
}

extension JobRecord {
    /// The job's state as `dstack status` shows it: Slurm's word while the job waits in a Slurm queue
    /// (`pending (Resources)`), else the job's own state.
    public var displayStatus: String {
        if let slurm, [.submitted, .preparing].contains(status), slurm.state == "PENDING" { return slurm.summary }
        return status.rawValue
    }
}
