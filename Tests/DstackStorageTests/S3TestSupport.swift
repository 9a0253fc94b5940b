import Crypto
import Foundation
import Logging
import Testing

@testable import DstackStorage

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The repository root, found from this file's path.
let s3RepositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A moto server started by `scripts/s3-server` on a free loopback port.
///
/// Two run side by side. The open one (moto's default) accepts any signature; most tests use it, with the fake
/// credentials `testing`/`testing`. The verifying one checks every signature: it starts with its first three requests
/// exempt (`INITIAL_NO_AUTH_ACTION_COUNT=3`), which create an IAM user, its access key and an allow-all policy, and
/// everything after that must be signed with that key. It is for the credential errors and for checking that the
/// signer's requests are accepted. (Moto's own check re-encodes the URL it received, so it rejects correct signatures
/// of keys or query values with reserved characters, `%2F` included, even from botocore; tests on it avoid those.)
final class MotoServer: Sendable {
    let port: Int
    let directory: URL
    let accessKeyId: String
    let secretAccessKey: String

    var endpoint: String { "http://127.0.0.1:\(port)" }

    private init(port: Int, directory: URL, accessKeyId: String, secretAccessKey: String) {
        self.port = port
        self.directory = directory
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
    }

    static func start(verifying: Bool) async throws -> MotoServer {
        let port = try await freeLoopbackPort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-tests-\(UUID().uuidString)")
        var environment = ProcessInfo.processInfo.environment
        environment["INITIAL_NO_AUTH_ACTION_COUNT"] = verifying ? "3" : nil
        let (status, output) = try await run(
            "/bin/bash", [s3RepositoryRoot.appendingPathComponent("scripts/s3-server").path, "start", "\(port)", directory.path],
            environment: environment)
        guard status == 0 else {
            throw S3TestFailure("scripts/s3-server start failed (\(status)): \(output)")
        }
        let server = MotoServer(port: port, directory: directory, accessKeyId: "testing", secretAccessKey: "testing")
        guard verifying else { return server }
        do {
            let (id, secret) = try await createIAMUser(endpoint: server.endpoint)
            return MotoServer(port: port, directory: directory, accessKeyId: id, secretAccessKey: secret)
        } catch {
            await server.stop()
            throw error
        }
    }

    func stop() async {
        _ = try? await Self.run("/bin/bash", [s3RepositoryRoot.appendingPathComponent("scripts/s3-server").path, "stop", directory.path])
        try? FileManager.default.removeItem(at: directory)
    }

    /// The environment a user of this server would have.
    var environment: [String: String] {
        ["AWS_ACCESS_KEY_ID": accessKeyId, "AWS_SECRET_ACCESS_KEY": secretAccessKey, "AWS_REGION": "us-east-1"]
    }

    /// A storage on `bucket` (and `prefix`) of this server, with short backoff delays.
    func storage(
        bucket: String, prefix: String = "", environment: [String: String]? = nil, tuning: S3Tuning = .fastTests,
        logger: Logger = Logger(label: "test.s3")
    ) throws -> S3Storage {
        try S3Storage(
            url: "s3://\(bucket)\(prefix.isEmpty ? "" : "/" + prefix)", endpoint: endpoint,
            environment: environment ?? self.environment, homeDirectory: s3EmptyHome, logger: logger,
            tuning: tuning, transport: nil)
    }

    /// Creates a fresh bucket and returns its name.
    func makeBucket() async throws -> String {
        let name = "dstack-\(UUID().uuidString.lowercased().prefix(18))"
        let storage = try self.storage(bucket: name)
        _ = try await storage.client.send(S3Request(method: "PUT", key: nil))
        return name
    }

    private static func createIAMUser(endpoint: String) async throws -> (String, String) {
        let policy = #"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#
        _ = try await iam(endpoint, ["Action": "CreateUser", "UserName": "dstack-tests"])
        let key = try await iam(endpoint, ["Action": "CreateAccessKey", "UserName": "dstack-tests"])
        _ = try await iam(
            endpoint,
            ["Action": "PutUserPolicy", "UserName": "dstack-tests", "PolicyName": "all", "PolicyDocument": policy])
        guard let id = key.find("AccessKeyId")?.text, let secret = key.find("SecretAccessKey")?.text else {
            throw S3TestFailure("moto's CreateAccessKey returned no key")
        }
        return (id, secret)
    }

    /// One IAM query-protocol call; moto routes it by the service in the signature's scope.
    private static func iam(_ endpoint: String, _ parameters: [String: String]) async throws -> S3XMLElement {
        let body = Data(
            (parameters.merging(["Version": "2010-05-08"]) { a, _ in a })
                .map { "\(SigV4.encode($0.key))=\(SigV4.encode($0.value))" }.joined(separator: "&").utf8)
        let url = URL(string: endpoint + "/")!
        let signer = SigV4Signer(
            credentials: AWSCredentials(accessKeyId: "bootstrap", secretAccessKey: "bootstrap"), region: "us-east-1",
            service: "iam", normalizePath: true, sendsContentSHA256: false)
        let contentType = "application/x-www-form-urlencoded"
        let signature = signer.sign(
            SigV4Request(
                method: "POST", path: "/", headers: [("host", "\(url.host!):\(url.port!)"), ("content-type", contentType)],
                payloadHash: SigV4.hexSHA256(body)),
            at: Date())
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        for (name, value) in signature.addedHeaders { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.upload(for: request, from: body)
        guard (response as? HTTPURLResponse)?.statusCode == 200, let document = S3XMLElement.parse(data) else {
            throw S3TestFailure("moto IAM \(parameters["Action"]!) failed: \(String(decoding: data, as: UTF8.self))")
        }
        return document
    }

    static func freeLoopbackPort() async throws -> Int {
        let (status, output) = try await run(
            "/usr/bin/env",
            ["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"])
        guard status == 0, let port = Int(output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw S3TestFailure("could not find a free port: \(output)")
        }
        return port
    }

    /// Runs a program to its end without blocking a thread of the concurrency pool; output goes through a file.
    @discardableResult
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil
    ) async throws -> (Int32, String) {
        let outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-run-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: outputFile.path, contents: nil) else {
            throw S3TestFailure("cannot create \(outputFile.path)")
        }
        defer { try? FileManager.default.removeItem(at: outputFile) }
        let output = try FileHandle(forWritingTo: outputFile)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output
        process.standardError = output
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: error)
            }
        }
        return (status, String(decoding: (try? Data(contentsOf: outputFile)) ?? Data(), as: UTF8.self))
    }
}

/// Starts the two moto servers once for the S3 suites, and stops them when the suites are done.
actor MotoServerHolder {
    private var starting: Task<(open: MotoServer, verifying: MotoServer), any Error>?

    private func servers() async throws -> (open: MotoServer, verifying: MotoServer) {
        if let starting { return try await starting.value }
        // One after the other: the first start may have to install moto, and two pip runs would collide.
        let task = Task { () async throws -> (open: MotoServer, verifying: MotoServer) in
            let open = try await MotoServer.start(verifying: false)
            do {
                return (open: open, verifying: try await MotoServer.start(verifying: true))
            } catch {
                await open.stop()
                throw error
            }
        }
        starting = task
        return try await task.value
    }

    /// The server that accepts any signature.
    func server() async throws -> MotoServer { try await servers().open }

    /// The server that checks signatures.
    func verifyingServer() async throws -> MotoServer { try await servers().verifying }

    func stop() async {
        if let (open, verifying) = try? await starting?.value {
            await open.stop()
            await verifying.stop()
        }
        starting = nil
    }
}

/// The moto servers of this test run.
let motoServers = MotoServerHolder()

/// Runs a suite with the moto server up, and stops the server after the suite's last test.
struct MotoServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        _ = try await motoServers.verifyingServer()
        do {
            try await function()
        } catch {
            await motoServers.stop()
            throw error
        }
        await motoServers.stop()
    }
}

extension S3Tuning {
    /// The product's tuning with short backoff, so retry tests do not wait.
    static let fastTests: S3Tuning = {
        var tuning = S3Tuning()
        tuning.baseDelay = .milliseconds(5)
        return tuning
    }()
}

extension S3XMLElement {
    /// The first element called `name` in this subtree, depth first.
    func find(_ name: String) -> S3XMLElement? {
        if self.name == name { return self }
        for child in children { if let found = child.find(name) { return found } }
        return nil
    }
}

/// A home directory that does not exist, so that no real ~/.aws files leak into tests.
let s3EmptyHome = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-no-home-\(UUID().uuidString)")

/// A failure in the tests' own setup.
struct S3TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A temporary directory removed at the end of `body`.
func withS3TemporaryDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: url) }
    return try await body(url)
}

/// Hex SHA-256 of a file, read 1 MiB at a time.
func s3SHA256(ofFile url: URL) throws -> String {
    let handle = try FileHandle(forReadingFrom: url)
    defer { try? handle.close() }
    var hasher = SHA256()
    while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
    return SigV4.hex(hasher.finalize())
}

/// Collects every log line (message and metadata) so tests can check what was logged.
final class S3LogCapture: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    var all: [String] { lock.withLock { lines } }
    func add(_ line: String) { lock.withLock { lines.append(line) } }

    /// A logger at trace level that writes here.
    var logger: Logger {
        var logger = Logger(label: "test.s3.capture") { _ in Handler(capture: self) }
        logger.logLevel = .trace
        return logger
    }

    struct Handler: LogHandler {
        let capture: S3LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            capture.add("\(event.level) \(event.message) \(metadata.merging(event.metadata ?? [:]) { $1 })")
        }
    }
}
