import Foundation
import Testing

@testable import DstackStorage

/// Runs `body`, expecting `StorageError.unusable`; returns the description after checking it never holds `secret`.
func expectS3Unusable(
    hiding secret: String, capture: S3LogCapture? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () async throws -> Void
) async -> String {
    do {
        try await body()
        Issue.record("expected StorageError.unusable, got success", sourceLocation: sourceLocation)
        return ""
    } catch StorageError.unusable(let location, let reason) {
        let error = StorageError.unusable(location: location, reason: reason)
        for text in ["\(error)", String(reflecting: error), reason, error.localizedDescription] {
            #expect(!text.contains(secret), "the secret leaked: \(text)", sourceLocation: sourceLocation)
        }
        for line in capture?.all ?? [] {
            #expect(!line.contains(secret), "the secret leaked into the log: \(line)", sourceLocation: sourceLocation)
        }
        return "\(error)"
    } catch {
        Issue.record("expected StorageError.unusable, got \(error)", sourceLocation: sourceLocation)
        return ""
    }
}

extension S3StorageTests {
    @Suite("errors a person can act on, never showing the secret")
    struct Errors {
        @Test("no such bucket")
        func noSuchBucket() async throws {
            let server = try await motoServers.verifyingServer()
            let capture = S3LogCapture()
            let storage = try server.storage(bucket: "dstack-no-such-bucket", logger: capture.logger)
            let message = await expectS3Unusable(hiding: server.secretAccessKey, capture: capture) {
                _ = try await storage.read("proj/runs/r/run.json")
            }
            #expect(message == "storage 's3://dstack-no-such-bucket' is unusable: bucket 'dstack-no-such-bucket' "
                + "does not exist at \(server.endpoint): create it, or fix the bucket name in the storage URL")
            _ = await expectS3Unusable(hiding: server.secretAccessKey) { _ = try await storage.list(prefix: "") }
            _ = await expectS3Unusable(hiding: server.secretAccessKey) {
                _ = try await storage.create("k", data: Data())
            }
        }

        @Test("a wrong secret: the message names the access key id and where it came from")
        func wrongSecret() async throws {
            let server = try await motoServers.verifyingServer()
            let bucket = try await server.makeBucket()
            let secret = "Wr0ngSecretThatMustNeverBeShown+abc/xyz"
            var environment = server.environment
            environment["AWS_SECRET_ACCESS_KEY"] = secret
            let capture = S3LogCapture()
            let storage = try server.storage(bucket: bucket, environment: environment, logger: capture.logger)
            let message = await expectS3Unusable(hiding: secret, capture: capture) {
                try await storage.write("proj/x", data: Data("x".utf8))
            }
            #expect(message.contains("the secret access key does not match access key id '\(server.accessKeyId)'"))
            #expect(message.contains("from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY"))
            _ = await expectS3Unusable(hiding: secret) { _ = try await storage.read("proj/x") }
            _ = await expectS3Unusable(hiding: secret) { try await storage.deleteAll(prefix: "") }
        }

        @Test("an unknown access key id, read from a profile in ~/.aws/credentials")
        func unknownKey() async throws {
            let server = try await motoServers.verifyingServer()
            let bucket = try await server.makeBucket()
            let secret = "AnotherSecretValue/1234567890abcdef"
            try await withS3TemporaryDirectory { home in
                try FileManager.default.createDirectory(at: home.appendingPathComponent(".aws"), withIntermediateDirectories: true)
                try "[ci]\naws_access_key_id = AKIAUNKNOWNKEY0000\naws_secret_access_key = \(secret)\n"
                    .write(to: home.appendingPathComponent(".aws/credentials"), atomically: true, encoding: .utf8)
                let storage = try S3Storage(
                    url: "s3://\(bucket)", endpoint: server.endpoint, environment: ["AWS_PROFILE": "ci"],
                    homeDirectory: home, logger: .init(label: "test"), tuning: .fastTests, transport: nil)
                let message = await expectS3Unusable(hiding: secret) { _ = try await storage.read("k") }
                #expect(message.contains("the server does not know access key id 'AKIAUNKNOWNKEY0000'"))
                #expect(message.contains("profile 'ci' in \(home.path)/.aws/credentials"))
            }
        }

        @Test("an endpoint where nothing listens: connection refused, quickly")
        func unreachable() async throws {
            let server = try await motoServers.verifyingServer()
            let port = try await MotoServer.freeLoopbackPort()
            let storage = try S3Storage(
                url: "s3://bucket/prefix", endpoint: "http://127.0.0.1:\(port)", environment: server.environment,
                homeDirectory: s3EmptyHome, logger: .init(label: "test"), tuning: .fastTests, transport: nil)
            let started = ContinuousClock.now
            let message = await expectS3Unusable(hiding: server.secretAccessKey) {
                try await storage.write("k", data: Data())
            }
            #expect(message == "storage 's3://bucket/prefix' is unusable: cannot connect to http://127.0.0.1:\(port) "
                + "(connection refused): check that the S3 server is running and the endpoint is right "
                + "(AWS_ENDPOINT_URL, or endpoint: in .dstack/config.yaml)")
            #expect(ContinuousClock.now - started < .seconds(5))
        }

        @Test("a server that checks signatures accepts every kind of request the storage sends")
        func signaturesAccepted() async throws {
            let server = try await motoServers.verifyingServer()
            let capture = S3LogCapture()
            var tuning = S3Tuning.fastTests
            tuning.maxAttempts = 1
            let storage = try server.storage(bucket: try await server.makeBucket(), tuning: tuning, logger: capture.logger)
            try await storage.write("proj/run.json", data: Data("{}".utf8))
            #expect(try await storage.read("proj/run.json") == Data("{}".utf8))
            #expect(try await storage.create("proj/tag.json", data: Data("t".utf8)))
            #expect(try await storage.create("proj/tag.json", data: Data("u".utf8)) == false)
            try await storage.append("proj/log", data: Data("a".utf8))
            try await storage.append("proj/log", data: Data("b".utf8))
            #expect(try await storage.read("proj/log") == Data("ab".utf8))
            try await withS3TemporaryDirectory { directory in
                let source = directory.appendingPathComponent("data.bin")
                try writeS3RandomFile(source, size: 17 * 1024 * 1024)
                try await storage.upload(from: source, to: "proj/data.bin")
                try await storage.download("proj/data.bin", to: directory.appendingPathComponent("back.bin"))
                #expect(try s3SHA256(ofFile: directory.appendingPathComponent("back.bin")) == s3SHA256(ofFile: source))
            }
            // Moto's check mangles '%2F' in query values, so only slash-free prefixes can be listed here.
            #expect(try await storage.list(prefix: "proj").map(\.key) == [
                "proj/data.bin", "proj/log", "proj/run.json", "proj/tag.json",
            ])
            try await storage.delete("proj/run.json")
            try await storage.deleteAll(prefix: "proj")
            #expect(try await storage.list(prefix: "").isEmpty)
            #expect(!capture.all.contains { $0.contains(server.secretAccessKey) })
        }
    }
}
