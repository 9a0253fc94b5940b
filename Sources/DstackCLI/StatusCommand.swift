import ArgumentParser
import DstackCore
import DstackModel
import Foundation

/// The JSON shape of `dstack status --json`: documented in docs/cli.md, relied on by scripts.
struct RunJSON: Encodable {
    struct Job: Encodable {
        let id: String
        let workflow: String
        let status: String
        let runner: String?
        let exitCode: Int32?
        let signal: Int32?
        let reason: String?
        let cacheKey: String
        let attempts: [Attempt]
        let startedAt: Date?
        let finishedAt: Date?
        let slurm: SlurmJobState?

        func encode(to encoder: Encoder) throws {
            // Every key is always present (null when unknown), so scripts can index without checks.
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(workflow, forKey: .workflow)
            try c.encode(status, forKey: .status)
            try c.encode(runner, forKey: .runner)
            try c.encode(exitCode, forKey: .exitCode)
            try c.encode(signal, forKey: .signal)
            try c.encode(reason, forKey: .reason)
            try c.encode(cacheKey, forKey: .cacheKey)
            try c.encode(attempts, forKey: .attempts)
            try c.encode(startedAt, forKey: .startedAt)
            try c.encode(finishedAt, forKey: .finishedAt)
            try c.encode(slurm, forKey: .slurm)
        }

        enum CodingKeys: String, CodingKey {
            case id, workflow, status, runner, exitCode, signal, reason, cacheKey, attempts, startedAt, finishedAt, slurm
        }
    }

    let name: String
    let workflow: String
    let status: String
    let submittedAt: Date
    let finishedAt: Date?
    let coordinatorGone: Bool
    let tags: [String]
    let variables: [String: String]
    let jobs: [Job]
    let submittedBy: String?
    let git: Git?
    let command: [String]?
    let dstackVersion: String?

    /// `"git"`: every key present, null when unknown.
    struct Git: Encodable {
        let state: GitState

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(state.commit, forKey: .commit)
            try c.encode(state.branch, forKey: .branch)
            try c.encode(state.dirty, forKey: .dirty)
            try c.encode(state.changedFiles, forKey: .changedFiles)
        }

        enum CodingKeys: String, CodingKey {
            case commit, branch, dirty, changedFiles
        }
    }

    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(submittedBy, forKey: .submittedBy)
        try c.encode(git, forKey: .git)
        try c.encode(command, forKey: .command)
        try c.encode(dstackVersion, forKey: .dstackVersion)
        try c.encode(name, forKey: .name)
        try c.encode(workflow, forKey: .workflow)
        try c.encode(status, forKey: .status)
        try c.encode(submittedAt, forKey: .submittedAt)
        try c.encode(finishedAt, forKey: .finishedAt)
        try c.encode(coordinatorGone, forKey: .coordinatorGone)
        try c.encode(tags, forKey: .tags)
        try c.encode(variables, forKey: .variables)
        try c.encode(jobs, forKey: .jobs)
    }

    enum CodingKeys: String, CodingKey {
        case name, workflow, status, submittedAt, finishedAt, coordinatorGone, tags, variables, jobs
        case submittedBy, git, command, dstackVersion
    }

    init(_ run: RunRecord, tags: [String], coordinatorGone: Bool) {
        name = run.name
        workflow = run.workflow
        status = run.status.rawValue
        submittedAt = run.submittedAt
        finishedAt = run.finishedAt
        self.coordinatorGone = coordinatorGone
        self.tags = tags
        variables = run.overrides
        submittedBy = run.provenance?.submittedBy
        git = run.provenance?.git.map(Git.init)
        command = run.provenance?.command
        dstackVersion = run.provenance?.dstackVersion
        jobs = run.jobs.map {
            Job(id: $0.id, workflow: $0.workflow, status: $0.status.rawValue, runner: $0.runner, exitCode: $0.exitCode,
                signal: $0.signal, reason: $0.reason, cacheKey: $0.cacheKey, attempts: $0.attempts,
                startedAt: $0.startedAt, finishedAt: $0.finishedAt, slurm: $0.slurm)
        }
    }
}

extension DstackCommand {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show runs and their jobs, newest first.",
            discussion: "Without -a, shows the last 10 runs (or -n N). A run whose coordinator died shows 'running (coordinator gone)'.",
            aliases: ["ps"]
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "Show only this run.")
        var run: String?

        @Flag(name: .shortAndLong, help: "Show every run.")
        var all = false

        @Option(name: .short, help: ArgumentHelp("Show the last N runs.", valueName: "n"))
        var n: Int = 10

        @Flag(help: "Print a JSON array of runs (see docs/cli.md for its shape).")
        var json = false

        func run() async throws {
            let workspace = try global.workspace()
            let runs: [RunRecord]
            if let run {
                runs = [try await workspace.run(run)]
            } else {
                runs = try await workspace.runs(limit: all ? nil : n)
            }
            let tags = try await workspace.tagsByRun()
            if json {
                try Terminal.json(runs.map { RunJSON($0, tags: tags[$0.name] ?? [], coordinatorGone: workspace.coordinatorGone($0)) })
                return
            }
            if runs.isEmpty {
                Terminal.out("no runs yet in project '\(workspace.projectName)'; start one with 'dstack run WORKFLOW'")
                return
            }
            var rows: [[String]] = []
            let now = Date()
            for run in runs {
                var runStatus = run.status.rawValue
                if workspace.coordinatorGone(run) { runStatus += " (coordinator gone)" }
                for (i, job) in run.jobs.enumerated() {
                    let duration = job.startedAt.map { Terminal.duration((job.finishedAt ?? now).timeIntervalSince($0)) } ?? ""
                    rows.append([
                        i == 0 ? run.name : "",
                        i == 0 ? run.workflow : "",
                        job.workflow,
                        Terminal.paint(job.displayStatus, Terminal.color(for: job.status), stdout: true)
                            + (job.status == .failed ? " (\(job.exitCode.map { "exit \($0)" } ?? job.reason ?? ""))" : "")
                            + (job.status == .uploading ? job.transfer.map { " \(formatBytes($0.done)) / \(formatBytes($0.total))" } ?? "" : ""),
                        job.runner ?? "",
                        i == 0 ? Terminal.ago(run.submittedAt, now: now) : "",
                        duration,
                        i == 0 ? (tags[run.name] ?? []).joined(separator: ",") : "",
                    ])
                }
                if run.jobs.isEmpty { rows.append([run.name, run.workflow, "", runStatus, "", Terminal.ago(run.submittedAt, now: now), "", ""]) }
                if run.status != .done, run.jobs.count > 0 {
                    rows.append(["", "", "(run)", runStatus, "", "", "", ""])
                }
            }
            Terminal.out(Terminal.table(["RUN", "WORKFLOW", "JOB", "STATUS", "RUNNER", "SUBMITTED", "DURATION", "TAG"], rows))
            if run != nil, let provenance = runs.first?.provenance {
                Terminal.out("\n" + Self.describe(provenance))
            }
        }

        /// Where a run came from, one `key  value` line each.
        static func describe(_ provenance: Provenance) -> String {
            var git = "not a git repository"
            if let state = provenance.git {
                git = (state.commit.map { String($0.prefix(12)) } ?? "no commit yet") + " on " + (state.branch ?? "a detached head")
                if state.dirty {
                    let shown = state.changedFiles.prefix(10).joined(separator: ", ")
                    let more = state.changedFiles.count > 10 ? " and \(state.changedFiles.count - 10) more" : ""
                    git += ", with uncommitted changes to \(state.changedFiles.count) file\(state.changedFiles.count == 1 ? "" : "s"): \(shown)\(more)"
                } else {
                    git += ", clean"
                }
            }
            let rows = [
                ["submitted by", provenance.submittedBy],
                ["git", git],
                ["command", provenance.command.map(shellQuote).joined(separator: " ")],
                ["dstack", provenance.dstackVersion],
            ]
            return rows.map { $0[0].padding(toLength: 14, withPad: " ", startingAt: 0) + $0[1] }.joined(separator: "\n")
        }
    }

    struct Logs: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a run's stored logs.",
            discussion: "Without JOB, every job's log is shown, each line prefixed by its job. -f follows until the run ends. --since shows only what arrived lately (to within a few seconds)."
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The run.")
        var run: String

        @Argument(help: "One job of the run (its workflow's name).")
        var job: String?

        @Flag(name: .shortAndLong, help: "Keep printing new output until the run finishes.")
        var follow = false

        @Option(help: ArgumentHelp("Only output that arrived in the last DURATION (90s, 10m, 2h, 1d) or since a time (2026-11-27T02:06:31Z).", valueName: "duration-or-time"))
        var since: String?

        /// The time `--since` names.
        func cutoff(now: Date = Date()) throws -> Date? {
            guard let since else { return nil }
            if let seconds = parseDuration(since), seconds >= 0 { return now.addingTimeInterval(-seconds) }
            if let time = parseTimestamp(since) { return time }
            throw ValidationError("--since takes a duration like 90s, 10m, 2h or 1d, or an ISO 8601 time, not '\(since)'")
        }

        func validate() throws { _ = try cutoff() }

        func run() async throws {
            let workspace = try global.workspace()
            let (jobs, events) = try await workspace.logs(run: run, jobs: job.map { [$0] }, since: try cutoff(), follow: follow)
            let prefixed = job == nil && jobs.count > 1
            let width = jobs.map(\.count).max() ?? 0
            var partial: [String: String] = [:]
            for try await event in events {
                switch event {
                case .output(let wf, let data):
                    guard prefixed else {
                        FileHandle.standardOutput.write(data)
                        continue
                    }
                    let text = String(decoding: data, as: UTF8.self)
                    var lines = ((partial[wf] ?? "") + text).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                    partial[wf] = lines.removeLast()
                    for line in lines { Terminal.out("\(wf.padding(toLength: width, withPad: " ", startingAt: 0)) | \(line)") }
                case .coordinatorGone:
                    Terminal.info("the run's coordinator is gone; 'dstack attach \(run)' resumes it")
                }
            }
            for (wf, rest) in partial where !rest.isEmpty {
                Terminal.out("\(wf.padding(toLength: width, withPad: " ", startingAt: 0)) | \(rest)")
            }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a run's jobs on their runners.",
            discussion: "Running jobs get SIGTERM (then SIGKILL after 5 s); jobs not started are marked stopped."
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The run to stop.")
        var run: String

        @Flag(name: .customShort("x"), help: "Do not collect the stopped jobs' artifacts (by default what they wrote so far is kept, never as a cache hit).")
        var abort = false

        func run() async throws {
            try await global.withWorkspace { workspace in
                let record = try await workspace.stop(run, collect: !abort)
                Terminal.out("run \(record.name) \(record.status.rawValue)")
            }
        }
    }

    struct Attach: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Coordinate a run whose coordinator is gone, following it to the end.",
            discussion: "Also what 'dstack run -d' starts in the background to carry the run."
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: "The run.")
        var run: String

        @Flag(help: "Print nothing but errors.")
        var quiet = false

        @Option(name: .customLong("max-jobs"), help: ArgumentHelp("Jobs run at once on the local runner.", valueName: "n"))
        var maxJobs: Int?

        func run() async throws {
            try await global.withWorkspace(maxJobs: maxJobs) { workspace in
                let record = try await workspace.run(run)
                let renderer = RunRenderer(workflows: record.jobs.map(\.workflow), quiet: quiet)
                let final = try await workspace.coordinate(run, sink: renderer)
                if quiet {
                    if final.status != .done { throw ExitStatus(code: 1) }
                    return
                }
                try await report(final, workspace: workspace)
            }
        }
    }
}
