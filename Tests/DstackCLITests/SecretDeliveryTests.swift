import DstackModel
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

@testable import DstackRunners

/// How a secret's value travels to a job: a 0600 file its wrapper sources, never a command line.
@Suite struct SecretDeliveryTests {
    static let awkward = "it's \"quoted\" $(touch /tmp/pwned) `x` ; \\ \n second line *"

    func job(_ secrets: [String: String]) -> JobLaunch {
        var job = JobLaunch(jobId: "j-1", commands: ["true"], environment: ["MODE": "x"], workingDir: "", image: "alpine:3")
        job.secretNames = secrets.keys.sorted()
        job.secretValues = SecretValues(secrets)
        return job
    }

    @Test func theFileIsCreated0600AndASourcingShellGetsTheValueByteForByte() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-secrets-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try SecretsFile.write(SecretValues(["HF_TOKEN": Self.awkward, "B": "two"]), into: dir)
        var info = stat()
        stat(dir.appendingPathComponent("secrets.env").path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
        let out = try Sandbox.run(["sh", "-c", ". \"$0/secrets.env\" && printf '%s|%s' \"$HF_TOKEN\" \"$B\"", dir.path], in: dir)
        #expect(out.stdout == Self.awkward + "|two")
        // Nothing to write, no file.
        try FileManager.default.removeItem(at: dir.appendingPathComponent("secrets.env"))
        try SecretsFile.write(SecretValues(), into: dir)
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("secrets.env").path))
    }

    @Test func aContainerGetsSecretsByNameOnly() {
        let line = JobCommand.container(engine: "docker", job: job(["HF_TOKEN": "hf-value-in-container"]))
        #expect(line.contains(" -e HF_TOKEN -e MODE alpine:3 "), "\(line)")
        #expect(!line.contains("hf-value-in-container"))
    }

    /// The SSH runner's start request: values travel in its payload (on the agent's stdin), the secrets file is
    /// written under umask 077, and the request line itself holds no value.
    @Test func valuesTravelInTheStartPayloadNeverOnTheRequestLine() throws {
        let runner = SSHRunner(SSHRunnerConfig(name: "r", ssh: .init(host: "h", user: "u"), workdir: "w"))
        var launch = job(["T": "tok-value-77"])
        launch.image = nil
        let snapshot = Snapshot(root: "/", files: [], id: "snap")
        let (arguments, payload) = try runner.startRequest(JobStart(launch: launch, snapshot: snapshot, gpus: [], gpuCount: 0,
                                                                      slots: 1, owner: "o", exportGPUs: false, engine: nil))
        let text = String(decoding: payload, as: UTF8.self)
        #expect(text.contains("umask 077\nprintf '%s' 'export T=tok-value-77\n' > secrets.env || return 2\numask 022\n"), "\(text)")
        #expect(text.contains("umask 077\nprintf '%s' 'export MODE=x\n' > env.sh || return 2\numask 022\n"), "environment values: the user's only")
        #expect(text.hasPrefix("printf '%s' 'set -e\ntrue\n' > commands.sh || return 2\n"), "other files keep the usual umask")
        let line = try AgentRequest("start", arguments).line
        #expect(!line.contains("tok-value-77"))
        #expect(!line.contains("MODE=x"))
    }
}
