import DstackModel
import DstackStorage
import Foundation
import Testing

/// A real S3-compatible server (moto, started by scripts/s3-server on a free loopback port) and one bucket.
final class Bucket: Sendable {
    let port: Int
    let directory: URL
    let name: String

    init(_ name: String) throws {
        self.name = name
        port = try Bucket.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-moto-\(UUID().uuidString.prefix(8))")
        let start = try Sandbox.run(["bash", Sandbox.repositoryRoot.appendingPathComponent("scripts/s3-server").path,
                                     "start", String(port), directory.path], in: Sandbox.repositoryRoot)
        guard start.status == 0 else { throw BucketError("scripts/s3-server failed: \(start.output)") }
        // moto's default mode accepts any signature, so a bare PUT creates the bucket.
        let create = try Sandbox.run(["python3", "-c", "import urllib.request,sys; urllib.request.urlopen(urllib.request.Request(sys.argv[1], method='PUT')).read()",
                                      "\(endpoint)/\(name)"], in: Sandbox.repositoryRoot)
        guard create.status == 0 else { throw BucketError("cannot create bucket: \(create.output)") }
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// What a user of this bucket would have in their environment; the secret is one a test can grep for.
    func environment(secret: String = Bucket.secret) -> [String: String] {
        ["AWS_ACCESS_KEY_ID": "AKIDTESTING", "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
         "AWS_ENDPOINT_URL": endpoint, "DSTACK_STORAGE": "s3://\(name)/team"]
    }

    static let secret = "sEcReT-dstack-test-0123456789abcdefXYZ"

    func stop() {
        _ = try? Sandbox.run(["bash", Sandbox.repositoryRoot.appendingPathComponent("scripts/s3-server").path, "stop", directory.path],
                             in: Sandbox.repositoryRoot)
        try? FileManager.default.removeItem(at: directory)
    }

    static func freePort() throws -> Int {
        let result = try Sandbox.run(["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"],
                                     in: Sandbox.repositoryRoot)
        guard let port = Int(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else { throw BucketError("no free port") }
        return port
    }
}

struct BucketError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Storage in a bucket: the same layout and behaviour as a directory, shared between coordinators.
@Suite(.serialized) struct BucketTests {
    /// A project copied from examples/, named so that two copies share runs, cache and tags.
    func project(_ bucket: Bucket, _ name: String = #function) throws -> Sandbox {
        let box = try Sandbox(name)
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/config.yaml", "project: shared-examples\n")
        return box
    }

    @Test func examplePipelineInABucketSharedByTwoCoordinators() async throws {
        let bucket = try Bucket("dstack-shared")
        defer { bucket.stop() }
        let alice = try project(bucket, "alice")
        let bob = try project(bucket, "bob")
        defer { alice.cleanup(); bob.cleanup() }
        let env = bucket.environment()

        let first = try alice.dstack(["run", "evaluate"], environment: env)
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("evaluate | mse "))
        let aliceRun = try alice.lastRun(env)

        // Bob, another coordinator with his own runner directory, sees Alice's run and reuses her results.
        let list = try bob.dstack(["status", "-a", "--json"], environment: env)
        #expect(list.status == 0, "\(list.output)")
        #expect(list.stdout.contains("\"name\" : \"\(aliceRun)\""))
        let second = try bob.dstack(["run", "evaluate"], environment: env)
        #expect(second.status == 0, "\(second.output)")
        #expect(!second.stdout.contains(" | "), "Bob reran jobs whose results Alice stored: \(second.stdout)")

        // Tags are shared too.
        #expect(try alice.dstack(["tags", "add", "best", aliceRun], environment: env).status == 0)
        let tags = try bob.dstack(["tags", "list"], environment: env)
        #expect(tags.stdout.contains("best") && tags.stdout.contains(aliceRun))
        let artifacts = try bob.dstack(["artifacts", "list", ":best", "--json"], environment: env)
        #expect(artifacts.stdout.contains("\"path\" : \"metrics/report.txt\""))
        let logs = try bob.dstack(["logs", aliceRun, "train"], environment: env)
        #expect(logs.stdout.contains("epoch 1 loss"))

        // -v logs each request on stderr, and the request log names no secret either.
        let verbose = try bob.dstack(["-v", "tags", "list"], environment: env)
        #expect(verbose.status == 0, "\(verbose.output)")
        #expect(verbose.stderr.contains("s3: GET"), "\(verbose.stderr)")
        #expect(!verbose.stdout.contains("s3: "))

        // The secret appears in no output and no stored record.
        for output in [first.output, second.output, list.output, tags.output, artifacts.output, logs.output, verbose.output] {
            #expect(!output.contains(Bucket.secret))
        }
        let storage = try S3Storage(url: "s3://\(bucket.name)/team", endpoint: bucket.endpoint, environment: env,
                                    homeDirectory: alice.root)
        let runJSON = String(decoding: try #require(try await storage.read("shared-examples/runs/\(aliceRun)/run.json")), as: UTF8.self)
        #expect(runJSON.contains(aliceRun))
        #expect(!runJSON.contains(Bucket.secret))
    }

    /// The keys under a storage root with run names and hashes blanked out, which differ from one storage to another.
    func shape(of storage: any Storage, runs: [String]) async throws -> Set<String> {
        let hash = try Regex("[0-9a-f]{12,}")
        return Set(try await storage.list(prefix: "").map { object in
            var key = object.key
            for run in runs { key = key.replacingOccurrences(of: run, with: "RUN") }
            return key.replacing(hash, with: "HASH")
        })
    }

    @Test func aBucketHoldsWhatADirectoryWouldWhicheverWayItIsNamed() async throws {
        let bucket = try Bucket("dstack-layout")
        defer { bucket.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: prep
            commands: [mkdir -p data, echo rows > data/rows.txt]
            artifacts: [data]
          - name: train
            depends-on: [prep]
            commands: [cat data/rows.txt]
        """)
        // The same run, tagged, in a storage directory...
        let local = try box.dstack(["run", "train", "-t", "first"])
        #expect(local.status == 0, "\(local.output)")
        let expected = try await shape(of: DirectoryStorage(root: box.storage), runs: [try box.lastRun()])
        #expect(expected.contains { $0.hasPrefix("project/tags/") }, "\(expected)")

        // ...then in the bucket named by --storage (no $DSTACK_STORAGE)...
        var env = box.environment.merging(bucket.environment()) { $1 }
        env.removeValue(forKey: "DSTACK_STORAGE")
        let flagURL = "s3://\(bucket.name)/by-flag"
        let byFlag = try Sandbox.run([Sandbox.binary, "run", "train", "-t", "first", "--storage", flagURL], in: box.project, environment: env)
        #expect(byFlag.status == 0, "\(byFlag.output)")
        let flagRun = try box.lastRun(bucket.environment().merging(["DSTACK_STORAGE": flagURL]) { $1 })
        let flagStorage = try S3Storage(url: flagURL, endpoint: bucket.endpoint, environment: env, homeDirectory: box.root)
        #expect(try await shape(of: flagStorage, runs: [flagRun]) == expected)

        // ...and in the bucket named by storage: and endpoint: in .dstack/config.yaml (no $AWS_ENDPOINT_URL either).
        let configURL = "s3://\(bucket.name)/by-config"
        try box.write(".dstack/config.yaml", "storage: \(configURL)\nendpoint: \(bucket.endpoint)\n")
        env.removeValue(forKey: "AWS_ENDPOINT_URL")
        let byConfig = try Sandbox.run([Sandbox.binary, "run", "train", "-t", "first"], in: box.project, environment: env)
        #expect(byConfig.status == 0, "\(byConfig.output)")
        let listed = try Sandbox.run([Sandbox.binary, "status", "--json"], in: box.project, environment: env)
        let configRun = try #require((try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])?.first?["name"] as? String)
        let configStorage = try S3Storage(url: configURL, endpoint: bucket.endpoint, environment: env, homeDirectory: box.root)
        #expect(try await shape(of: configStorage, runs: [configRun]) == expected)
    }

    @Test func aHundredMegabyteArtifactRoundTripsByteForByte() throws {
        let bucket = try Bucket("dstack-big")
        defer { bucket.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: big
            commands:
              - mkdir -p out
              - head -c 104857600 /dev/urandom > out/big.bin
              - sha256sum out/big.bin | cut -d' ' -f1
            artifacts: [out]
        """)
        let env = bucket.environment()
        let result = try box.dstack(["run", "big"], environment: env)
        #expect(result.status == 0, "\(result.output)")
        let hash = try #require(result.stdout.split(separator: "\n").last.map { $0.replacingOccurrences(of: "big | ", with: "") })
        let out = box.root.appendingPathComponent("dl")
        let download = try box.dstack(["artifacts", "download", try box.lastRun(env), "-o", out.path], environment: env)
        #expect(download.status == 0, "\(download.output)")
        let local = try Sandbox.run(["sha256sum", out.appendingPathComponent("out/big.bin").path], in: box.root)
        #expect(local.stdout.hasPrefix(hash), "\(local.stdout) vs \(hash)")
    }

    @Test func statusListsThousandsOfRunsAcrossListingPages() async throws {
        let bucket = try Bucket("dstack-many")
        defer { bucket.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [\"true\"]\n")
        var env = bucket.environment()
        env["DSTACK_STORAGE"] = "s3://\(bucket.name)"
        let storage = try S3Storage(url: "s3://\(bucket.name)", endpoint: bucket.endpoint, environment: env,
                                    homeDirectory: box.root)
        let store = RunStore(storage: storage, project: "project")
        let count = 2500
        try await withThrowingTaskGroup(of: Void.self) { group in
            for batch in 0..<16 {
                group.addTask {
                    for i in stride(from: batch, to: count, by: 16) {
                        var run = RunRecord(name: "many-runs-\(i)", project: "project", workflow: "a", overrides: [:],
                                            snapshotId: "x", submittedAt: Date(timeIntervalSince1970: 1_800_000_000 + Double(i)), jobs: [])
                        run.status = .done
                        try await store.saveRun(run)
                    }
                }
            }
            try await group.waitForAll()
        }
        let result = try box.dstack(["status", "-a", "--json"], environment: env)
        #expect(result.status == 0, "\(result.stderr)")
        let runs = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        #expect(runs.count == count)
        #expect(runs.first?["name"] as? String == "many-runs-\(count - 1)", "newest first")
    }

    @Test func unreachableEndpointAndBadBucketAreInfrastructureErrorsWithoutTheSecret() throws {
        let bucket = try Bucket("dstack-errors")
        defer { bucket.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [\"true\"]\n")
        var env = bucket.environment()
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:\(try Bucket.freePort())"
        let down = try box.dstack(["status"], environment: env)
        #expect(down.status == 3, "\(down.output)")
        #expect(down.stderr.contains("127.0.0.1"))
        #expect(!down.output.contains(Bucket.secret))

        var missing = bucket.environment()
        missing["DSTACK_STORAGE"] = "s3://no-such-bucket-here/x"
        let nobucket = try box.dstack(["run", "a"], environment: missing)
        #expect(nobucket.status == 3, "\(nobucket.output)")
        #expect(nobucket.stderr.contains("no-such-bucket-here"))
        #expect(!nobucket.output.contains(Bucket.secret))
    }
}
