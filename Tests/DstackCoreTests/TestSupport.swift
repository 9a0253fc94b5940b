import DstackCore
import DstackModel
import DstackRunners
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A throwaway directory under the system's temporary directory; `remove()` deletes it.
struct Scratch {
    let url: URL

    init(_ name: String = #function) throws {
        let safe = name.filter { $0.isLetter || $0.isNumber }.prefix(40)
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("dstack-core-\(safe)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// `path` inside the directory.
    func at(_ path: String) -> URL { url.appendingPathComponent(path) }

    /// Writes `text` at `path`, creating folders; sets the permission bits when `mode` is given.
    func write(_ path: String, _ text: String, mode: Int? = nil) throws {
        let file = at(path)
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: file)
        if let mode { try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file.path) }
    }

    /// Removes the directory; retries briefly when something (a coordinator's last write) lands in it meanwhile.
    func remove() {
        for _ in 0..<50 {
            try? FileManager.default.removeItem(at: url)
            if !FileManager.default.fileExists(atPath: url.path) { return }
            usleep(20_000)
        }
    }
}

/// Loads workflow (and variable) files as `.dstack/workflows.yaml` / `.dstack/variables.yaml`.
func loadProject(_ workflows: String, variables: String? = nil) throws -> Project {
    try Project.load(
        workflows: SourceFile(displayName: ".dstack/workflows.yaml", text: workflows),
        variables: variables.map { SourceFile(displayName: ".dstack/variables.yaml", text: $0) })
}

/// A chain `w0 <- w1 <- ... <- w(n-1)` built in memory (no YAML), for planner scale tests.
func chainProject(_ n: Int) -> Project {
    let file = "chain.yaml"
    var workflows: [Workflow] = []
    workflows.reserveCapacity(n)
    for i in 0..<n {
        let mark = Mark(line: i + 1, column: 1)
        let deps = i == 0 ? [] : [Dependency(workflow: "w\(i - 1)", tag: nil, mark: mark, file: file)]
        workflows.append(Workflow(name: Located("w\(i)", at: mark, in: file), dependsOn: deps,
                                  commands: [Located("echo \(i)", at: mark, in: file)]))
    }
    return Project(workflows: workflows, variables: VariableTable(), sources: SourceSet())
}

/// The cache key of every job of `plan`, by workflow.
func keys(_ plan: Plan) -> [String: String] {
    Dictionary(uniqueKeysWithValues: plan.jobs.map { ($0.workflow, $0.cacheKey) })
}

/// Runs git in `directory` with a fixed identity, failing the test when it fails.
func git(_ arguments: String..., in directory: URL, sourceLocation: SourceLocation = #_sourceLocation) async throws {
    let result = try await Subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false",
         "-c", "init.defaultBranch=main"] + arguments, in: directory)
    try #require(result.status == 0, "git \(arguments.joined(separator: " ")): \(result.errorText)",
                 sourceLocation: sourceLocation)
}

/// True when a `git` program can be run here.
let gitAvailable: Bool = {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["git", "--version"]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}()

/// Records every event a coordinator emits, with the time it arrived.
final class EventLog: RunEventSink, @unchecked Sendable {
    private let lock = NSLock()
    private var events: [(Date, RunEvent)] = []

    func emit(_ event: RunEvent) {
        lock.lock()
        events.append((Date(), event))
        lock.unlock()
    }

    /// The workflows that started, in order.
    var started: [String] {
        lock.lock()
        defer { lock.unlock() }
        return events.compactMap { if case .started(let wf, _) = $0.1 { return wf } else { return nil } }
    }

    /// Everything a job wrote, as text.
    func output(of workflow: String) -> String {
        lock.lock()
        defer { lock.unlock() }
        var data = Data()
        for (_, event) in events { if case .output(let wf, let chunk) = event, wf == workflow { data.append(chunk) } }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Polls `condition` every 50 ms until it holds or `seconds` pass; returns whether it held.
func eventually(within seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(nanoseconds: 50_000_000)
    }
    return try await condition()
}

/// The sha256 of `data` as `sha256sum` computes it: an implementation independent of the code under test.
func sha256Sum(_ data: Data) async throws -> String {
    let dir = try Scratch()
    defer { dir.remove() }
    try data.write(to: dir.at("blob"))
    let result = try await Subprocess.run(["sha256sum", dir.at("blob").path])
    return String(result.output.prefix(64))
}

/// True where /proc describes processes (Linux).
let hasProc = FileManager.default.fileExists(atPath: "/proc/self/stat")

/// A process as /proc/PID/stat shows it.
struct ProcessState: Sendable, CustomStringConvertible {
    let pid: pid_t
    let state: String
    let parent: pid_t
    let command: String
    var description: String { "\(pid) \(state) \(command) (parent \(parent))" }
}

/// Every process in process group `group`, from /proc (Linux; empty elsewhere).
func processStates(group: pid_t) -> [ProcessState] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry -> ProcessState? in
        guard let pid = pid_t(entry),
              let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
              let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
        // After the command: state, parent, process group, ...
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 3, pid_t(fields[2]) == group, let parent = pid_t(fields[1]) else { return nil }
        return ProcessState(pid: pid, state: String(fields[0]), parent: parent,
                            command: String(stat[stat.index(after: open)..<close]))
    }
}
