import Foundation
import Testing

/// A throwaway project, storage and runner directory, and a way to run the real `dstack` binary against them.
struct Sandbox {
    let root: URL
    var project: URL { root.appendingPathComponent("project") }
    var storage: URL { root.appendingPathComponent("storage") }
    var runnerDir: URL { root.appendingPathComponent("runner") }

    init(_ name: String = #function) throws {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        root = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-test-\(safe)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("project/.dstack"), withIntermediateDirectories: true)
    }

    /// Writes `text` at `path` inside the project.
    func write(_ path: String, _ text: String, mode: Int? = nil) throws {
        let url = project.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
        if let mode { try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: url.path) }
    }

    func workflows(_ text: String) throws { try write(".dstack/workflows.yaml", text) }
    func variables(_ text: String) throws { try write(".dstack/variables.yaml", text) }

    func read(_ path: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
        var output: String { stdout + stderr }
    }

    /// Runs `dstack ARGS` in the project with this sandbox's storage and runner directory.
    @discardableResult
    func dstack(_ arguments: [String], environment extra: [String: String] = [:], in directory: URL? = nil) throws -> Result {
        try Sandbox.run([Sandbox.binary] + arguments, in: directory ?? project, environment: environment.merging(extra) { $1 })
    }

    func dstack(_ arguments: String...) throws -> Result { try dstack(arguments) }

    var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["DSTACK_STORAGE"] = storage.path
        env["DSTACK_RUNNER_DIR"] = runnerDir.path
        env["NO_COLOR"] = "1"
        env.removeValue(forKey: "DSTACK_HOSTS")
        return env
    }

    /// The name of the newest run.
    func lastRun(_ environment: [String: String] = [:]) throws -> String {
        let runs = try statusJSON(environment: environment)
        return try #require(runs.first?["name"] as? String)
    }

    /// `dstack status --json -a`, parsed.
    func statusJSON(_ run: String? = nil, environment: [String: String] = [:]) throws -> [[String: Any]] {
        let result = try dstack(["status", "--json", "-a"] + (run.map { [$0] } ?? []), environment: environment)
        #expect(result.status == 0, "\(result.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
    }

    /// The jobs of a run by workflow.
    func jobs(_ run: String) throws -> [String: [String: Any]] {
        let runs = try statusJSON(run)
        let jobs = try #require(runs.first?["jobs"] as? [[String: Any]])
        return Dictionary(uniqueKeysWithValues: jobs.map { ($0["workflow"] as! String, $0) })
    }

    func cleanup() {
        try? FileManager.default.removeItem(at: root)
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The built `dstack`: `$DSTACK_BIN`, or the binary beside the test bundle.
    static let binary: String = {
        if let bin = ProcessInfo.processInfo.environment["DSTACK_BIN"], FileManager.default.isExecutableFile(atPath: bin) { return bin }
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("dstack").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return repositoryRoot.appendingPathComponent(".build/debug/dstack").path
    }()

    /// Runs a program and collects its output (through files, so large output cannot block it).
    static func run(_ arguments: [String], in directory: URL, environment: [String: String]? = nil) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        if let environment { process.environment = environment }
        let tmp = FileManager.default.temporaryDirectory
        let out = tmp.appendingPathComponent("out-\(UUID().uuidString)")
        let err = tmp.appendingPathComponent("err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: try String(contentsOf: out, encoding: .utf8),
                      stderr: try String(contentsOf: err, encoding: .utf8))
    }

    /// A program started and not yet waited for.
    struct Running {
        let process: Process
        let out: URL
        let err: URL

        func wait() throws -> Result {
            process.waitUntilExit()
            defer {
                try? FileManager.default.removeItem(at: out)
                try? FileManager.default.removeItem(at: err)
            }
            return Result(status: process.terminationStatus, stdout: try String(contentsOf: out, encoding: .utf8),
                          stderr: try String(contentsOf: err, encoding: .utf8))
        }
    }

    /// Starts a program without waiting for it.
    static func start(_ arguments: [String], in directory: URL, environment: [String: String]) throws -> Running {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = environment
        let tmp = FileManager.default.temporaryDirectory
        let out = tmp.appendingPathComponent("out-\(UUID().uuidString)")
        let err = tmp.appendingPathComponent("err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return Running(process: process, out: out, err: err)
    }

    /// Runs git in the project with a fixed identity.
    func git(_ arguments: String...) throws {
        let result = try Sandbox.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t"] + arguments, in: project)
        #expect(result.status == 0, "git \(arguments): \(result.stderr)")
    }
}
