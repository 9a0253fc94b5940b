@testable import DstackSSH
import Foundation
import Testing

/// The repository root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// The output of a shell command that failed.
struct ShellError: Error, CustomStringConvertible {
    let script: String
    let status: Int32
    let output: String
    var description: String { "sh -c '\(script)' exited with status \(status): \(output)" }
}

/// Runs `script` with /bin/sh and returns its standard output; throws when it exits non-zero.
/// The process is awaited through its termination handler, so no cooperative thread blocks.
@discardableResult
func shell(_ script: String, environment: [String: String] = [:]) async throws -> String {
    let folder = FileManager.default.temporaryDirectory
    let out = folder.appendingPathComponent("sh-\(UUID().uuidString).out")
    let err = folder.appendingPathComponent("sh-\(UUID().uuidString).err")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: out)
        try? FileManager.default.removeItem(at: err)
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", script]
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    let status: Int32 = try await withCheckedThrowingContinuation { continuation in
        process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
        do { try process.run() } catch { continuation.resume(throwing: error) }
    }
    let stdout = try String(contentsOf: out, encoding: .utf8)
    guard status == 0 else {
        throw ShellError(script: script, status: status, output: stdout + (try String(contentsOf: err, encoding: .utf8)))
    }
    return stdout
}

/// Appends `text` to the file at `path`.
func appendText(_ text: String, to path: String) throws {
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    try handle.seekToEnd()
    try handle.write(contentsOf: Data(text.utf8))
}

/// A fresh temporary folder, inside `parent` when given (a test bed's folder is removed when it stops).
func makeTemporaryFolder(_ prefix: String, in parent: String? = nil) throws -> String {
    let base = parent.map { URL(fileURLWithPath: $0) } ?? FileManager.default.temporaryDirectory
    let url = base.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// Real sshd runners on loopback, started with scripts/testbed in a temporary folder.
struct Testbed: Sendable {
    /// One runner's address.
    struct Runner: Sendable {
        let name: String
        let host: String
        let port: Int
        /// The runner's folder (sshd_config, host key, authorized_keys, sshd.log).
        let folder: String
    }

    let folder: String
    let runners: [Runner]
    var clientKey: String { folder + "/client_ed25519" }
    var knownHosts: String { folder + "/known_hosts" }

    /// Starts `count` runners; `hostKeyTypes` are passed to the script as TESTBED_HOST_KEY_TYPES.
    /// `extraConfigs[k]` is appended to runner k's sshd_config (k counts from 1, as the script does).
    static func start(runners count: Int, hostKeyTypes: String? = nil, extraConfigs: [Int: String] = [:],
                      logLevels: [Int: String] = [:]) async throws -> Testbed {
        let folder = try makeTemporaryFolder("dstack-ssh-testbed")
        for (k, level) in logLevels {
            try FileManager.default.createDirectory(atPath: "\(folder)/runner-\(k)", withIntermediateDirectories: true)
            try level.write(toFile: "\(folder)/runner-\(k)/log_level", atomically: true, encoding: .utf8)
        }
        for (k, text) in extraConfigs {
            try FileManager.default.createDirectory(atPath: "\(folder)/runner-\(k)", withIntermediateDirectories: true)
            try text.write(toFile: "\(folder)/runner-\(k)/extra_config", atomically: true, encoding: .utf8)
        }
        let script = repositoryRoot.appendingPathComponent("scripts/testbed").path
        let environment = hostKeyTypes.map { ["TESTBED_HOST_KEY_TYPES": $0] } ?? [:]
        let listing = try await shell("\(shellQuote(script)) start \(count) \(shellQuote(folder))", environment: environment)
        let runners = listing.split(separator: "\n").map { line -> Runner in
            let fields = line.split(separator: " ").map(String.init)
            return Runner(name: fields[0], host: fields[1], port: Int(fields[2])!, folder: "\(folder)/\(fields[0])")
        }
        return Testbed(folder: folder, runners: runners)
    }

    /// Stops the runners and removes the folder.
    func stop() async {
        let script = repositoryRoot.appendingPathComponent("scripts/testbed").path
        _ = try? await shell("\(shellQuote(script)) stop \(shellQuote(folder))")
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// Options for runner `index` that use the test bed's client key and known_hosts and no agent.
    func options(_ index: Int = 0, configure: (inout SSHOptions) -> Void = { _ in }) -> SSHOptions {
        let runner = runners[index]
        var options = SSHOptions(
            host: runner.host, port: runner.port, identityFiles: [clientKey], agentSocket: nil, knownHostsFile: knownHosts,
            connectTimeout: .seconds(10), idleTimeout: .seconds(60))
        configure(&options)
        return options
    }

    /// Connects to runner `index`.
    func connect(_ index: Int = 0, configure: (inout SSHOptions) -> Void = { _ in }) async throws -> SSHSession {
        try await SSHSession.connect(options(index, configure: configure))
    }
}

/// The test bed of the suite being run.
let currentTestbed = TaskLocal<Testbed?>(wrappedValue: nil)

/// The running suite's test bed; fails the test when the suite has none.
func testbed() throws -> Testbed {
    try #require(currentTestbed.get(), "the suite needs the .testbed trait")
}

/// Starts a test bed before a suite's tests and stops it after them.
struct TestbedTrait: SuiteTrait, TestScoping {
    let runners: Int
    let hostKeyTypes: String?
    var extraConfigs: [Int: String] = [:]
    var logLevels: [Int: String] = [:]
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let bed = try await Testbed.start(runners: runners, hostKeyTypes: hostKeyTypes, extraConfigs: extraConfigs,
                                          logLevels: logLevels)
        do {
            try await currentTestbed.withValue(bed) { try await function() }
        } catch {
            await bed.stop()
            throw error
        }
        await bed.stop()
    }
}

extension Trait where Self == TestbedTrait {
    /// Real sshd runners for the suite, from scripts/testbed.
    static func testbed(runners: Int = 1, hostKeyTypes: String? = nil, extraConfigs: [Int: String] = [:],
                        logLevels: [Int: String] = [:]) -> Self {
        TestbedTrait(runners: runners, hostKeyTypes: hostKeyTypes, extraConfigs: extraConfigs, logLevels: logLevels)
    }
}

/// Collects values from any thread.
final class Collector<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [Value] = []

    func append(_ value: Value) {
        lock.lock()
        items.append(value)
        lock.unlock()
    }

    var values: [Value] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}
