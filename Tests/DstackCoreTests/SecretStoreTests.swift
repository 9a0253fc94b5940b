import DstackModel
import DstackRunners
import DstackStorage
import Foundation
import Testing
@testable import DstackCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The secret store: one 0600 file on this machine, secrets kept per project.
@Suite struct FileSecretStoreTests {
    func mode(_ path: URL) -> Int {
        var info = stat()
        stat(path.path, &info)
        return Int(info.st_mode & 0o777)
    }

    @Test func valuesAreKeptPerProjectInA0600File() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let store = FileSecretStore(path: dir.at("home/.dstack/secrets"))
        #expect(try store.names(project: "a").isEmpty)
        try store.set("HF_TOKEN", value: "hf-one", project: "a")
        try store.set("HF_TOKEN", value: "hf-two", project: "b")
        try store.set("WANDB_API_KEY", value: "w'and\"b\nvalue", project: "a")
        #expect(mode(dir.at("home/.dstack/secrets")) == 0o600)
        #expect(mode(dir.at("home/.dstack")) == 0o700)
        #expect(try store.names(project: "a") == ["HF_TOKEN", "WANDB_API_KEY"])
        #expect(try store.values(project: "a") == ["HF_TOKEN": "hf-one", "WANDB_API_KEY": "w'and\"b\nvalue"])
        #expect(try store.values(project: "b") == ["HF_TOKEN": "hf-two"])
        #expect(try store.delete("HF_TOKEN", project: "a"))
        #expect(try !store.delete("HF_TOKEN", project: "a"))
        #expect(try store.names(project: "a") == ["WANDB_API_KEY"])
        #expect(mode(dir.at("home/.dstack/secrets")) == 0o600)
        // Nothing but the file itself is left in the folder (no temporary copies).
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.at("home/.dstack").path) == ["secrets"])
    }

    @Test func aFileOthersCanReadIsRefused() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try dir.write("secrets", #"{"projects": {"a": {"X": "value-not-to-show"}}}"#, mode: 0o644)
        let store = FileSecretStore(path: dir.at("secrets"))
        let error = try #require(throws: CoreError.self) { _ = try store.values(project: "a") }
        #expect("\(error)" == "the secrets file \(dir.at("secrets").path) can be read by others (mode 644); run 'chmod 600 \(dir.at("secrets").path)'")
        try dir.write("secrets", "not json value-not-to-show", mode: 0o600)
        let unreadable = try #require(throws: CoreError.self) { _ = try store.values(project: "a") }
        #expect(!"\(unreadable)".contains("value-not-to-show"))
    }
}

/// Secret values stay out of everything that is written down: the plan's JSON and the cache key.
@Suite struct SecretRecordTests {
    static let workflows = """
        workflows:
          - name: train
            secrets: [HF_TOKEN]
            commands: [echo "$HF_TOKEN"]

        """

    @Test func aLaunchEncodesSecretNamesButNeverValues() throws {
        var launch = JobLaunch(jobId: "j", commands: ["true"], environment: ["A": "b"], workingDir: "")
        launch.secretNames = ["HF_TOKEN"]
        launch.secretValues = SecretValues(["HF_TOKEN": "hf_never_written_42"])
        let json = String(decoding: try RecordCoding.encoder().encode(launch), as: UTF8.self)
        #expect(json.contains("\"secret_names\""))
        #expect(!json.contains("hf_never_written_42"), "\(json)")
        #expect(!"\(launch)".contains("hf_never_written_42"))
        let back = try RecordCoding.decoder().decode(JobLaunch.self, from: Data(json.utf8))
        #expect(back.secretNames == ["HF_TOKEN"])
        #expect(back.secretValues.isEmpty)
        // Plans stored before secrets existed still read.
        let old = #"{"commands":["true"],"environment":{},"gpus":[],"job_id":"j","working_dir":""}"#
        #expect(try RecordCoding.decoder().decode(JobLaunch.self, from: Data(old.utf8)).secretNames == [])
    }

    @Test func theCacheKeyHoldsSecretNamesNotValues() throws {
        let project = try loadProject(Self.workflows)
        let plan = try Planner(project: project).plan("train", overrides: [:], snapshotId: "s", runName: "r-1", tags: [:])
        #expect(plan.jobs[0].launch.secretNames == ["HF_TOKEN"])
        let withOther = try loadProject(Self.workflows.replacingOccurrences(of: "[HF_TOKEN]", with: "[HF_TOKEN2]"))
        let other = try Planner(project: withOther).plan("train", overrides: [:], snapshotId: "s", runName: "r-1", tags: [:])
        #expect(plan.jobs[0].cacheKey != other.jobs[0].cacheKey)
        let without = try loadProject(Self.workflows.replacingOccurrences(of: "    secrets: [HF_TOKEN]\n", with: ""))
        let plain = try Planner(project: without).plan("train", overrides: [:], snapshotId: "s", runName: "r-1", tags: [:])
        #expect(plan.jobs[0].cacheKey != plain.jobs[0].cacheKey)
        // No secrets: the key is the one computed before secrets existed.
        #expect(CacheKey.compute(workflow: "w", image: nil, commands: ["x"], environment: [:], workingDir: "", artifacts: [],
                                 variables: [:], snapshotId: "s", dependencies: [], tagDependencies: [])
                == CacheKey.compute(workflow: "w", image: nil, commands: ["x"], environment: [:], workingDir: "", artifacts: [],
                                    variables: [:], snapshotId: "s", dependencies: [], tagDependencies: [], secretNames: []))
    }
}

/// `JobOutput`: masked output to the terminal and the stored log; a job followed again from the start of its
/// runner log after a reconnect adds exactly what was not stored yet.
@Suite struct JobOutputTests {
    final class Collect: RunEventSink, @unchecked Sendable {
        let lock = NSLock()
        var data = Data()
        func emit(_ event: RunEvent) {
            if case .output(_, let bytes) = event { lock.withLock { data.append(bytes) } }
        }
    }

    @Test func aStreamFollowedAgainFromTheStartStoresEachByteOnce() async throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let store = RunStore(storage: try DirectoryStorage(root: dir.at("storage")), project: "p")
        let secrets = SecretValues(["T": "tok-1234567"])
        let raw = Array("earlier attempt\n".utf8) + Array("one tok-1234567 two tok-12".utf8) + Array("34567 three\n".utf8)
        try await store.appendLog(run: "r", workflow: "w", Data("earlier attempt\n".utf8))
        let logStart: Int64 = 16
        let attemptRaw = Array(raw[16...])
        // The first follower gets part of the stream, then its connection drops (no finish).
        let terminal = Collect()
        let first = JobOutput(store: store, sink: terminal, run: "r", workflow: "w", secrets: secrets, storedSize: logStart)
        try await first.write(Data(attemptRaw[..<24]))
        // A second follower starts over from the runner log's start and skips what is stored.
        let size = try await store.logSize(run: "r", workflow: "w")
        let second = JobOutput(store: store, sink: terminal, run: "r", workflow: "w", secrets: secrets, storedSize: size,
                               stored: size - logStart, resuming: true)
        #expect(second.runnerOffset == 0)
        for chunk in stride(from: 0, to: attemptRaw.count, by: 5) {
            try await second.write(Data(attemptRaw[chunk..<min(chunk + 5, attemptRaw.count)]))
        }
        try await second.finish()
        let log = String(decoding: try await store.readLog(run: "r", workflow: "w"), as: UTF8.self)
        #expect(log == "earlier attempt\none *** two *** three\n")
        #expect(String(decoding: terminal.data, as: UTF8.self) == "one *** two *** three\n")
        // The fresh stream wrote no mark (the attempt's start stands for one); the resuming one marked its first output.
        let marks = try await store.logMarks(run: "r", workflow: "w")
        #expect(size == logStart + Int64("one *** two ".utf8.count))
        #expect(marks.map(\.offset) == [size])
    }

    @Test func withoutSecretsTheRunnerLogIsFollowedFromWhereTheStoredLogEnds() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let store = RunStore(storage: try DirectoryStorage(root: dir.at("storage")), project: "p")
        let output = JobOutput(store: store, sink: Collect(), run: "r", workflow: "w", secrets: SecretValues(), storedSize: 100, stored: 40)
        #expect(output.runnerOffset == 40)
    }
}
