import DstackStorage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Secrets end to end, through the real binary: kept on this machine only, delivered to the job through a 0600
/// file that is gone before its commands run, masked in everything shown or stored, never on a command line.
@Suite(.serialized) struct SecretsTests {
    /// A value no file, log or process list has by chance: letters and dashes (never in a hex digest).
    static func freshValue() -> String {
        "sEcReT-hf-" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().map { $0.isNumber ? "q" : $0 }.map(String.init).joined() + "-XyZ"
    }

    /// The value, and pieces of it long enough to be telling, to look for.
    static func telltales(_ value: String) -> [String] {
        [value, String(value.prefix(14)), String(value.suffix(14)), String(value.dropFirst(10).prefix(16))]
    }

    /// Every file under `root` that holds one of `needles`.
    static func filesHolding(_ needles: [String], under root: URL) -> [String] {
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else { return [] }
        var found: [String] = []
        for case let url as URL in walker {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true,
                  let data = try? Data(contentsOf: url) else { continue }
            if needles.contains(where: { data.range(of: Data($0.utf8)) != nil }) { found.append(url.path) }
        }
        return found
    }

    /// A folder with an `rm` that records the mode of each `secrets.env` it is asked to remove (the job's wrapper
    /// removes it right after reading it), then removes as usual: a stand-in, like the container engine's.
    static func rmRecorder() throws -> URL {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-rm-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        let script = """
        #!/bin/sh
        for a; do
          case $a in */secrets.env) [ -f "$a" ] && stat -c '%a' "$a" >> \(bin.path)/modes ;; esac
        done
        exec /bin/rm "$@"

        """
        try Data(script.utf8).write(to: bin.appendingPathComponent("rm"))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent("rm").path)
        return bin
    }

    /// Samples every process's full command line while `running` runs.
    final class ProcessSampler: @unchecked Sendable {
        private let lock = NSLock()
        private var samples: [String] = []
        private var stopped = false
        private var thread: Thread?

        func start() {
            let thread = Thread { [self] in
                while !lock.withLock({ stopped }) {
                    if let result = try? Sandbox.run(["ps", "-e", "-ww", "-o", "args="], in: URL(fileURLWithPath: "/")) {
                        lock.withLock { samples.append(result.stdout) }
                    }
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
            self.thread = thread
            thread.start()
        }

        func stop() -> [String] {
            lock.withLock { stopped = true }
            while thread?.isFinished == false { Thread.sleep(forTimeInterval: 0.01) }
            return lock.withLock { samples }
        }
    }

    /// Prints the secret whole, in two writes with a pause between (two reads for the coordinator), writes its
    /// hash as an artifact, says whether the secrets file is still there, and sleeps.
    static let leakyWorkflow = """
    workflows:
      - name: leak
        secrets: [HF_TOKEN]
        commands:
          - echo "the token is $HF_TOKEN, yes $HF_TOKEN"
          - head=${HF_TOKEN%??????????}; printf 'split:%s' "$head"; sleep 0.4; printf '%s|\\n' "${HF_TOKEN#"$head"}"
          - mkdir -p out && printf '%s' "$HF_TOKEN" | sha256sum | cut -d' ' -f1 > out/hash
          - ls ../secrets.env >/dev/null 2>&1 && echo "secrets file still there" || echo "secrets file gone"
          - sleep 2
          - echo "bye $HF_TOKEN"
        artifacts: [out]

    """

    enum RunnerKind: String, CaseIterable, Sendable { case local, ssh }
    enum StorageKind: String, CaseIterable, Sendable { case directory, bucket }

    @Test(arguments: RunnerKind.allCases, StorageKind.allCases)
    func aJobGetsItsSecretAndNothingElseEverSeesIt(runner: RunnerKind, storage: StorageKind) async throws {
        let value = Self.freshValue()
        let needles = Self.telltales(value)
        let box = try Sandbox("secret-\(runner)-\(storage)")
        defer { box.cleanup() }
        let recorder = try Self.rmRecorder()
        defer { try? FileManager.default.removeItem(at: recorder) }
        var env = box.environment
        env["DSTACK_SECRETS_FILE"] = box.root.appendingPathComponent("home-secrets/secrets").path
        var bed: SSHBed?
        var bucket: Bucket?
        defer { bed?.stop(); bucket?.stop() }
        var workDirectories = [box.runnerDir]
        switch runner {
        case .local:
            env["PATH"] = recorder.path + ":" + (env["PATH"] ?? "/usr/bin:/bin")
        case .ssh:
            let started = try SSHBed(1, extraEnvironment: [0: "PATH=\(recorder.path):/usr/local/bin:/usr/bin:/bin"])
            bed = started
            try box.write(".dstack/hosts.yaml", started.inventory(tag: "secret"))
            env.merge(started.environment) { $1 }
            workDirectories.append(started.directory.appendingPathComponent("work-secret-r1"))
        }
        if storage == .bucket {
            let started = try Bucket("dstack-secrets")
            bucket = started
            env.merge(started.environment()) { $1 }
        }
        try box.workflows(Self.leakyWorkflow)
        // The value arrives on stdin, as a user would pipe it.
        let valueFile = box.root.appendingPathComponent("value.txt")
        try Data(value.utf8).write(to: valueFile)
        let add = try Sandbox.run(["sh", "-c", "\"$0\" secrets add HF_TOKEN < \"$1\"", Sandbox.binary, valueFile.path], in: box.project, environment: env)
        #expect(add.status == 0, "\(add.output)")

        let sampler = ProcessSampler()
        sampler.start()
        let result = try Sandbox.run([Sandbox.binary, "-v", "run", "leak"], in: box.project, environment: env)
        let samples = sampler.stop()
        #expect(result.status == 0, "\(result.output)")

        // The job received the right value.
        let hash = try Sandbox.run(["sha256sum", valueFile.path], in: box.root).stdout.prefix(64)
        let run = try box.lastRun(env)
        let downloaded = box.root.appendingPathComponent("downloaded")
        let download = try box.dstack(["artifacts", "download", run, "-o", downloaded.path], environment: env)
        #expect(download.status == 0, "\(download.output)")
        #expect(try String(contentsOf: downloaded.appendingPathComponent("out/hash"), encoding: .utf8) == hash + "\n")
        try FileManager.default.removeItem(at: downloaded)
        try FileManager.default.removeItem(at: valueFile)

        // The terminal and the stored log show ***, even for the value written in two pieces.
        #expect(result.stdout.contains("leak | the token is ***, yes ***\n"), "\(result.stdout)")
        #expect(result.stdout.contains("leak | split:***|\n"), "\(result.stdout)")
        #expect(result.stdout.contains("leak | bye ***\n"))
        #expect(result.stdout.contains("leak | secrets file gone\n"), "the job's commands ran while secrets.env existed")
        let logs = try box.dstack(["logs", run], environment: env)
        #expect(logs.stdout == "the token is ***, yes ***\nsplit:***|\nsecrets file gone\nbye ***\n", "\(logs.output)")
        for needle in needles {
            #expect(!result.output.contains(needle), "the terminal or -v output shows the value")
            #expect(!logs.output.contains(needle))
        }

        // The file that carried it was created 0600 and removed by the job's wrapper.
        #expect(try String(contentsOf: recorder.appendingPathComponent("modes"), encoding: .utf8) == "600\n")

        // No trace in the storage, the runner's work directory, the project, or any process's command line.
        #expect(samples.count >= 10, "only \(samples.count) process samples")
        #expect(!samples.contains { sample in needles.contains { sample.contains($0) } }, "ps showed the value")
        #expect(Self.filesHolding(needles, under: box.storage) == [])
        #expect(Self.filesHolding(needles, under: box.project) == [])
        for directory in workDirectories {
            #expect(Self.filesHolding(needles, under: directory) == [], "in \(directory.path)")
        }
        if let bucket {
            let s3 = try S3Storage(url: "s3://\(bucket.name)", endpoint: bucket.endpoint, environment: bucket.environment(),
                                   homeDirectory: box.root)
            let objects = try await s3.list(prefix: "")
            #expect(objects.contains { $0.key.hasSuffix("/plan.json") }, "the bucket holds the run: \(objects.map(\.key))")
            for object in objects {
                let data = try #require(try await s3.read(object.key))
                #expect(!needles.contains { data.range(of: Data($0.utf8)) != nil }, "\(object.key) holds the value")
            }
        }
    }

    @Test func secretsAreAddedListedAndDeletedPerProjectOnThisMachine() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: w\n    commands: [\"true\"]\n")
        let file = box.root.appendingPathComponent("elsewhere/secrets")
        let env = ["DSTACK_SECRETS_FILE": file.path]
        func add(_ name: String, _ stdin: String, in directory: URL? = nil) throws -> Sandbox.Result {
            let input = box.root.appendingPathComponent("input-\(UUID().uuidString.prefix(6))")
            try Data(stdin.utf8).write(to: input)
            defer { try? FileManager.default.removeItem(at: input) }
            return try Sandbox.run(["sh", "-c", "\"$0\" secrets add \"$1\" < \"$2\"", Sandbox.binary, name, input.path],
                                   in: directory ?? box.project, environment: box.environment.merging(env) { $1 })
        }
        let added = try add("HF_TOKEN", "hf-value-one\n")
        #expect(added.status == 0, "\(added.output)")
        #expect(added.stderr == "secret 'HF_TOKEN' set for project 'project' on this machine\n")
        #expect(try add("WANDB_API_KEY", "wandb-value-two").status == 0)
        var info = stat()
        stat(file.path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        // One trailing newline is not part of the value.
        let stored = try String(contentsOf: file, encoding: .utf8)
        #expect(stored.contains("\"hf-value-one\"") && stored.contains("\"wandb-value-two\""))

        let list = try box.dstack(["secrets", "list"], environment: env)
        #expect(list.status == 0)
        #expect(list.stdout == "HF_TOKEN\nWANDB_API_KEY\n")
        #expect(!list.output.contains("value"))

        // Another project on the same machine has its own secrets.
        let other = box.root.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other.appendingPathComponent(".dstack"), withIntermediateDirectories: true)
        let empty = try box.dstack(["secrets", "list"], environment: env, in: other)
        #expect(empty.stdout == "")
        #expect(empty.stderr == "no secrets for project 'other' on this machine; add one with 'dstack secrets add NAME'\n")

        let deleted = try box.dstack(["secrets", "delete", "HF_TOKEN"], environment: env)
        #expect(deleted.status == 0)
        #expect(try box.dstack(["secrets", "list"], environment: env).stdout == "WANDB_API_KEY\n")
        let again = try box.dstack(["secrets", "delete", "HF_TOKEN"], environment: env)
        #expect(again.status == 64)
        #expect(again.stderr == "error: no secret 'HF_TOKEN' in project 'project' on this machine; 'dstack secrets list' shows them\n")

        let badName = try add("hf-token", "x")
        #expect(badName.status == 64)
        #expect(badName.stderr == "error: 'hf-token' is not a valid secret name: secrets reach jobs as environment variables (letters, digits and '_', not starting with a digit)\n")
        let emptyValue = try add("EMPTY", "\n")
        #expect(emptyValue.status == 64)
        #expect(emptyValue.stderr == "error: the value of secret 'EMPTY' is empty; give it on standard input (dstack secrets add EMPTY < file) or at the prompt\n")

        // Without $DSTACK_SECRETS_FILE they live in ~/.dstack/secrets.
        let home = box.root.appendingPathComponent("home")
        let homeAdd = try Sandbox.run(["sh", "-c", "echo v-home | \"$0\" secrets add HOME_ONE", Sandbox.binary], in: box.project,
                                      environment: box.environment.merging(["HOME": home.path]) { $1 }.filter { $0.key != "DSTACK_SECRETS_FILE" })
        #expect(homeAdd.status == 0, "\(homeAdd.output)")
        stat(home.appendingPathComponent(".dstack/secrets").path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    @Test func aMissingSecretStopsTheRunBeforeAnythingRuns() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: prepare
            commands: [touch prepared]
          - name: train
            depends-on: [prepare]
            secrets: [WANDB_API_KEY, HF_TOKEN]
            commands: [touch trained]

        """)
        let env = ["DSTACK_SECRETS_FILE": box.root.appendingPathComponent("secrets").path]
        let add = try Sandbox.run(["sh", "-c", "echo w | \"$0\" secrets add WANDB_API_KEY", Sandbox.binary], in: box.project,
                                  environment: box.environment.merging(env) { $1 })
        #expect(add.status == 0)
        let result = try box.dstack(["run", "train"], environment: env)
        #expect(result.status == 2)
        #expect(result.stderr == """
        .dstack/workflows.yaml:6:30: error: secret 'HF_TOKEN' is not set for project 'project' on this machine; add it with 'dstack secrets add HF_TOKEN'
            secrets: [WANDB_API_KEY, HF_TOKEN]
                                     ^

        """)
        #expect(try box.statusJSON(environment: env).isEmpty, "a run was recorded")
        #expect(!FileManager.default.fileExists(atPath: box.runnerDir.appendingPathComponent("jobs").path))
    }

    @Test func credentialLikeEnvironmentAndVariableNamesAreWarnedAbout() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: train
            environment: {WANDB_API_KEY: abc, WANDB_MODE: offline}
            commands: ["true"]

        """)
        try box.variables("variables:\n  train:\n    hf-token: xyz\n    epochs: 1\n")
        let result = try box.dstack("run", "train")
        #expect(result.status == 0, "\(result.output)")
        let warnings = result.stderr.split(separator: "\n").filter { $0.hasPrefix("warning: ") }
        #expect(warnings == [
            "warning: workflow 'train' sets environment variable 'WANDB_API_KEY', whose name looks like a credential: 'environment:' values are stored with the run in plain text; list it under 'secrets: [WANDB_API_KEY]' and set it with 'dstack secrets add WANDB_API_KEY'",
            "warning: variable 'hf-token' (HF_TOKEN in the job) has a name that looks like a credential: variable values are stored with the run in plain text; list 'HF_TOKEN' under 'secrets:' and set it with 'dstack secrets add HF_TOKEN'",
        ])
    }

    /// A coordinator killed while a job with secrets runs: `attach` follows the job again from the start of its
    /// log (masked sizes do not count the runner's bytes) and stores each line once, masked.
    @Test func attachAfterACoordinatorDiedStoresTheMaskedLogOnce() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        let value = Self.freshValue()
        var env = box.environment
        env["DSTACK_SECRETS_FILE"] = box.root.appendingPathComponent("secrets").path
        let add = try Sandbox.run(["sh", "-c", "printf '%s' \"$V\" | \"$0\" secrets add API_TOKEN", Sandbox.binary], in: box.project,
                                  environment: env.merging(["V": value]) { $1 })
        #expect(add.status == 0)
        try box.workflows("""
        workflows:
          - name: slow
            secrets: [API_TOKEN]
            commands:
              - 'for i in 1 2 3 4 5 6; do echo "line $i $API_TOKEN"; sleep 0.4; done'

        """)
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "slow"], in: box.project, environment: env)
        var run = ""
        for _ in 0..<300 {
            if let name = (try? box.statusJSON(environment: env))?.first?["name"] as? String,
               try box.dstack(["logs", name, "slow"], environment: env).stdout.contains("line 2") {
                run = name
                break
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(!run.isEmpty, "the job never printed line 2")
        kill(coordinator.process.processIdentifier, SIGKILL)
        _ = try? coordinator.wait()
        // The values stay on the machine they were added on: without them, nothing is resumed.
        #expect(try box.dstack(["secrets", "delete", "API_TOKEN"], environment: env).status == 0)
        let refused = try box.dstack(["attach", run], environment: env)
        #expect(refused.status == 2)
        #expect(refused.stderr == "error: run '\(run)' needs secret 'API_TOKEN', which is not set for project 'project' on this machine; add it with 'dstack secrets add API_TOKEN' (secret values stay on the machine they were added on)\n")
        #expect(try Sandbox.run(["sh", "-c", "printf '%s' \"$V\" | \"$0\" secrets add API_TOKEN", Sandbox.binary], in: box.project,
                                environment: env.merging(["V": value]) { $1 }).status == 0)
        let resumed = try box.dstack(["attach", run], environment: env)
        #expect(resumed.status == 0, "\(resumed.output)")
        let expected = (1...6).map { "line \($0) ***\n" }.joined()
        #expect(try box.dstack(["logs", run, "slow"], environment: env).stdout == expected)
        #expect(!resumed.output.contains(value))
        #expect(Self.filesHolding(Self.telltales(value), under: box.storage) == [])
    }
}
