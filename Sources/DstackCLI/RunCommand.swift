import ArgumentParser
import DstackCore
import DstackModel
import Foundation

extension DstackCommand {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a workflow and the workflows it depends on.",
            discussion: """
            Plans the workflow with its dependencies, reuses every job whose result is already stored (shown as \
            'cached'), runs the rest as slots allow and streams their logs, each line prefixed by its job.

            Every variable of the workflow and its dependencies is a flag: 'dstack run train --epochs 20'. \
            'dstack run WORKFLOW --help' lists them with their defaults.
            """
        )

        @OptionGroup var global: GlobalOptions

        @Flag(name: .shortAndLong, help: "Return at once, printing only the run's name; the run goes on in the background.")
        var detach = false

        @Flag(name: .customLong("no-cache"), help: "Run every job, even those whose results are stored.")
        var noCache = false

        @Option(name: .shortAndLong, help: ArgumentHelp("Tag the run's results when it is done.", valueName: "tag"))
        var tag: String?

        @Flag(help: "Keep job directories on the runner even when jobs succeed.")
        var keep = false

        @Option(name: .customLong("max-jobs"), help: ArgumentHelp("Jobs run at once on the local runner (default: the CPU count).", valueName: "n"))
        var maxJobs: Int?

        @Option(help: ArgumentHelp("Times a job whose runner is lost is tried again on another runner.", valueName: "n"))
        var retries: Int = 2

        @Argument(help: "The workflow to run.")
        var workflow: String

        @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Variables: --NAME VALUE or --NAME=VALUE.", valueName: "variables"))
        var variables: [String] = []

        func validate() throws {
            if let maxJobs, maxJobs < 1 { throw ValidationError("--max-jobs must be 1 or more") }
        }

        func run() async throws {
            try await global.withWorkspace(maxJobs: maxJobs) { workspace in
                let project = try workspace.loadProject()
                let planner = Planner(project: project)
                let closure = try planner.closure(of: workflow)
                let known = planner.variables(for: closure)
                let overrides = try parseVariables(known: known.map(\.name))
                for warning in workspace.secretLikeNameWarnings(closure, project: project) {
                    Terminal.error("warning: \(warning)")
                }
                var request = RunRequest(workflow: workflow, overrides: overrides, noCache: noCache, keep: keep, tag: tag)
                request.retries = max(0, retries)
                request.commandLine = CommandLine.arguments
                let submitted = try await workspace.submit(request)
                let name = submitted.record.name

                if detach {
                    try spawnCoordinator(name, workspace: workspace)
                    Terminal.out(name)
                    return
                }
                let cached = submitted.plan.jobs.filter { $0.cached != nil }.count
                Terminal.info("run \(Terminal.paint(name, "1")): \(workflow), \(submitted.plan.jobs.count) job\(submitted.plan.jobs.count == 1 ? "" : "s") (\(cached) cached), code \(submitted.snapshot.id.prefix(12)) (\(submitted.snapshot.files.count) files)")
                let renderer = RunRenderer(workflows: submitted.plan.jobs.map(\.workflow))
                let interrupts = InterruptHandler()
                let final = try await workspace.coordinate(submitted, sink: renderer) { coordinator in
                    interrupts.onFirst = { Task { await coordinator.requestStop() } }
                }
                interrupts.cancel()
                try await report(final, workspace: workspace)
            }
        }

        /// The options of `run` itself (and the global ones) with how many values each takes.
        static let ownOptions: [String: Int] = [
            "-d": 0, "--detach": 0, "--no-cache": 0, "--keep": 0, "-v": 0, "--verbose": 0, "--accept-new-host-keys": 0,
            "-t": 1, "--tag": 1, "--max-jobs": 1, "--retries": 1, "-C": 1, "--storage": 1, "--hosts": 1,
        ]

        /// Moves `run`'s own options ahead of the workflow, so they work anywhere on the line while every other
        /// `--NAME VALUE` after the workflow stays a variable.
        static func hoistingOptions(_ arguments: [String]) -> [String] {
            guard arguments.first == "run" else { return arguments }
            var front: [String] = []
            var rest: [String] = []
            var i = 1
            while i < arguments.count {
                let arg = arguments[i]
                let name = arg.split(separator: "=", maxSplits: 1).first.map(String.init) ?? arg
                if let arity = ownOptions[name] {
                    front.append(arg)
                    if arity == 1, !arg.contains("="), i + 1 < arguments.count {
                        front.append(arguments[i + 1])
                        i += 1
                    }
                } else {
                    rest.append(arg)
                }
                i += 1
            }
            return ["run"] + front + rest
        }

        /// `dstack run WORKFLOW --help`: the usual help plus the variables of the workflow and its dependencies.
        static func workflowHelp(_ arguments: [String]) async throws -> String? {
            guard arguments.first == "run", arguments.contains("--help") || arguments.contains("-h") else { return nil }
            let rest = arguments.dropFirst().filter { $0 != "--help" && $0 != "-h" }
            guard let command = try? Run.parse(Array(rest)) else { return nil }
            let workspace = try command.global.workspace()
            let project = try workspace.loadProject()
            let planner = Planner(project: project)
            let closure = try planner.closure(of: command.workflow)
            var text = Run.helpMessage(for: Run.self, columns: 100)
            let wf = project.workflow(named: command.workflow)
            text += "\nWORKFLOW \(command.workflow)" + (wf?.help.map { ": \($0)" } ?? "") + "\n"
            text += "  runs: " + closure.map(\.name.value).joined(separator: " -> ") + "\n"
            let variables = planner.variables(for: closure)
            text += "\nVARIABLES (override with --NAME VALUE):\n"
            if variables.isEmpty { text += "  (none)\n" }
            let width = (variables.map { $0.name.count }.max() ?? 0) + 10
            for v in variables {
                text += "  " + "--\(v.name) <value>".padding(toLength: width, withPad: " ", startingAt: 0)
                    + "  (default: \(v.value.value))\n"
            }
            return text
        }

        /// Turns `--name value` / `--name=value` pairs into overrides, refusing names that are not variables.
        func parseVariables(known: [String]) throws -> [String: String] {
            var out: [String: String] = [:]
            var i = 0
            while i < variables.count {
                let arg = variables[i]
                guard arg.hasPrefix("--"), arg.count > 2 else {
                    throw ValidationError("unexpected argument '\(arg)'; variables are given as --NAME VALUE")
                }
                var name = String(arg.dropFirst(2))
                var value: String
                if let eq = name.firstIndex(of: "=") {
                    value = String(name[name.index(after: eq)...])
                    name = String(name[..<eq])
                } else {
                    guard i + 1 < variables.count else { throw ValidationError("variable --\(name) needs a value") }
                    value = variables[i + 1]
                    i += 1
                }
                guard known.contains(name) else {
                    let hint = known.isEmpty ? "; '\(workflow)' has no variables" : didYouMean(name, known) + "; 'dstack run \(workflow) --help' lists them"
                    throw ValidationError("unknown variable --\(name) for workflow '\(workflow)'\(hint)")
                }
                out[name] = value
                i += 1
            }
            return out
        }

        /// Starts `dstack attach RUN` in its own session, so the run finishes after this process returns.
        func spawnCoordinator(_ name: String, workspace: Workspace) throws {
            var arguments = ["attach", "--quiet"] + global.arguments
            if global.directory == nil { arguments += ["-C", FileManager.default.currentDirectoryPath] }
            if let maxJobs { arguments += ["--max-jobs", String(maxJobs)] }
            arguments.append(name)
            try workspace.startDetachedCoordinator(name, arguments: arguments)
        }
    }
}

/// Prints how a run ended and exits 1 when it did not succeed.
func report(_ run: RunRecord, workspace: Workspace) async throws {
    let seconds = (run.finishedAt ?? Date()).timeIntervalSince(run.submittedAt)
    guard run.status == .done else {
        for message in await workspace.failureReport(run) { Terminal.error(message) }
        Terminal.error("run \(run.name) \(run.status.rawValue) after \(Terminal.duration(seconds))")
        throw ExitStatus(code: 1)
    }
    let artifacts = run.jobs.contains { !$0.artifacts.isEmpty }
    Terminal.info("run \(run.name) \(Terminal.paint("done", "32")) in \(Terminal.duration(seconds))"
        + (artifacts ? "; artifacts: 'dstack artifacts list \(run.name)', stored in \(workspace.store.storage.location)/\(workspace.projectName)/artifacts" : ""))
}

/// Ctrl-C once stops the run (its jobs are stopped and recorded); twice aborts at once.
final class InterruptHandler: @unchecked Sendable {
    private let source: DispatchSourceSignal
    private let lock = NSLock()
    private var count = 0
    private var _onFirst: (@Sendable () -> Void)?

    var onFirst: (@Sendable () -> Void)? {
        get { lock.withLock { _onFirst } }
        set { lock.withLock { _onFirst = newValue } }
    }

    init() {
        signal(SIGINT, SIG_IGN)
        source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        source.setEventHandler { [weak self] in self?.fire() }
        source.resume()
    }

    private func fire() {
        let n = lock.withLock { count += 1; return count }
        if n == 1 {
            Terminal.info("\nstopping the run (Ctrl-C again to abort at once; use 'dstack run -d' to leave runs going)")
            onFirst?()
        } else {
            Terminal.info("aborted; the run's jobs may still be running: 'dstack stop' stops them")
            Foundation.exit(130)
        }
    }

    func cancel() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}
