import Foundation
import Testing

@testable import DstackStorage

/// A transport that answers from a script and records what it was sent.
final class ScriptedTransport: S3Transport, @unchecked Sendable {
    enum Step {
        case respond(Int, String = "", [String: String] = [:])
        case fail(URLError.Code)
    }

    private let lock = NSLock()
    private var steps: [Step]
    private var sent: [S3HTTPRequest] = []

    /// Answers with `steps` in order, repeating the last one when they run out.
    init(_ steps: [Step]) { self.steps = steps }

    var requests: [S3HTTPRequest] { lock.withLock { sent } }

    func send(_ request: S3HTTPRequest, body: S3Body, toFile: Bool) async throws -> S3HTTPResponse {
        let step = lock.withLock {
            sent.append(request)
            return steps.count > 1 ? steps.removeFirst() : steps[0]
        }
        switch step {
        case .respond(let status, let body, let headers):
            return S3HTTPResponse(status: status, headers: headers, body: Data(body.utf8))
        case .fail(let code):
            throw URLError(code)
        }
    }
}

func s3Error(_ code: String, _ message: String, extra: String = "") -> String {
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\(code)</Code><Message>\(message)</Message>\(extra)</Error>"
}

@Suite("S3 client: retries, error mapping, addressing (scripted transport)")
struct S3ClientTests {
    static let secret = "ScriptedSecret/0123456789abcdefABCDEF"

    func storage(
        _ transport: ScriptedTransport, url: String = "s3://bucket/prefix", endpoint: String? = "http://127.0.0.1:9",
        environment: [String: String] = [:], capture: S3LogCapture = S3LogCapture()
    ) throws -> S3Storage {
        try S3Storage(
            url: url, endpoint: endpoint,
            environment: ["AWS_ACCESS_KEY_ID": "AKIDSCRIPTED", "AWS_SECRET_ACCESS_KEY": Self.secret, "AWS_REGION": "eu-west-1"]
                .merging(environment) { $1 },
            homeDirectory: s3EmptyHome, logger: capture.logger, tuning: .fastTests, transport: transport)
    }

    @Test("503 SlowDown, 500, 429 and dropped connections are retried with backoff, then succeed", arguments: [
        ScriptedTransport.Step.respond(503, s3Error("SlowDown", "Please reduce your request rate.")),
        .respond(500, s3Error("InternalError", "We encountered an internal error.")),
        .respond(429, ""),
        .respond(400, s3Error("RequestTimeout", "Your socket connection to the server was not read from.")),
        .fail(.networkConnectionLost),
        .fail(.timedOut),
    ])
    func retriesThenSucceeds(_ failure: ScriptedTransport.Step) async throws {
        let transport = ScriptedTransport([failure, failure, .respond(200, "payload")])
        let storage = try storage(transport)
        #expect(try await storage.read("k") == Data("payload".utf8))
        #expect(transport.requests.count == 3)
        // Each attempt is signed afresh.
        #expect(transport.requests.allSatisfy { $0.value(forHTTPHeaderField: "Authorization")?.hasPrefix("AWS4-HMAC-SHA256 ") == true })
    }

    @Test("a server that keeps failing: 4 attempts, then a message that says so")
    func retriesGiveUp() async throws {
        let transport = ScriptedTransport([.respond(503, s3Error("SlowDown", "Please reduce your request rate."))])
        let storage = try storage(transport)
        let message = await expectS3Unusable(hiding: Self.secret) { _ = try await storage.read("k") }
        #expect(transport.requests.count == 4)
        #expect(message == "storage 's3://bucket/prefix' is unusable: GET 'prefix/k' kept failing with HTTP 503 "
            + "SlowDown (Please reduce your request rate.) after 4 attempts at http://127.0.0.1:9: the server is "
            + "overloaded or failing, try again later")
    }

    @Test("errors that retrying cannot fix are reported at once", arguments: [
        "NoSuchBucket", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "RequestTimeTooSkewed",
    ])
    func noRetry(_ code: String) async throws {
        let transport = ScriptedTransport([.respond(code == "NoSuchBucket" ? 404 : 403, s3Error(code, "no"))])
        _ = await expectS3Unusable(hiding: Self.secret) { _ = try await storage(transport).read("k") }
        #expect(transport.requests.count == 1)
    }

    @Test("clock skew: tells the person to fix the clock, with the server's time")
    func clockSkew() async throws {
        let transport = ScriptedTransport([.respond(
            403,
            s3Error(
                "RequestTimeTooSkewed", "The difference between the request time and the current time is too large.",
                extra: "<RequestTime>20200101T000000Z</RequestTime><ServerTime>2026-05-01T10:00:00Z</ServerTime>"))])
        let message = await expectS3Unusable(hiding: Self.secret) { _ = try await storage(transport).read("k") }
        #expect(message == "storage 's3://bucket/prefix' is unusable: this machine's clock is too far from the "
            + "server's (the server's time is 2026-05-01T10:00:00Z), so S3 refuses the signed request: fix the clock "
            + "(for example turn on NTP with 'timedatectl set-ntp true') and try again")
    }

    @Test("a bucket in another region: names the region to set")
    func wrongRegion() async throws {
        let transport = ScriptedTransport([.respond(
            400, s3Error("AuthorizationHeaderMalformed", "the region is wrong", extra: "<Region>ap-south-1</Region>"))])
        let message = await expectS3Unusable(hiding: Self.secret) { _ = try await storage(transport).read("k") }
        #expect(message.hasSuffix("bucket 'bucket' is in region 'ap-south-1', not 'eu-west-1': set AWS_REGION=ap-south-1 (or region in ~/.aws/config)"))
    }

    @Test("access denied names the key id, the operation and what to check")
    func accessDenied() async throws {
        let transport = ScriptedTransport([.respond(403, s3Error("AccessDenied", "Access Denied"))])
        let message = await expectS3Unusable(hiding: Self.secret) {
            try await storage(transport).write("runs/r.json", data: Data())
        }
        #expect(message.hasSuffix("access denied to PUT 'prefix/runs/r.json' for access key id 'AKIDSCRIPTED' "
            + "(from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY) (Access Denied): check that the credentials are "
            + "right and may read, write, list and delete in bucket 'bucket'"))
    }

    @Test("network failures: unknown host, TLS, refused", arguments: [
        (URLError.Code.cannotFindHost, "cannot resolve the host of http://127.0.0.1:9"),
        (.secureConnectionFailed, "the TLS connection to http://127.0.0.1:9 failed"),
        (.cannotConnectToHost, "cannot connect to http://127.0.0.1:9 (connection refused)"),
    ])
    func networkFailures(code: URLError.Code, expected: String) async throws {
        let transport = ScriptedTransport([.fail(code)])
        let message = await expectS3Unusable(hiding: Self.secret) { _ = try await storage(transport).read("k") }
        #expect(message.contains(expected), "\(message)")
        #expect(transport.requests.count == 1)
    }

    @Test("a server that echoes the secret or the session token still does not get them into the message")
    func redaction() async throws {
        let token = "SessionTokenValue/ABCDEFGHIJKLMNOP=="
        let transport = ScriptedTransport([.respond(400, s3Error("InvalidArgument", "bad \(Self.secret) and \(token)"))])
        let storage = try storage(transport, environment: ["AWS_SESSION_TOKEN": token])
        let message = await expectS3Unusable(hiding: token) { _ = try await storage.read("k") }
        #expect(!message.contains(Self.secret))
        #expect(message.contains("bad <redacted> and <redacted>"))
        #expect(transport.requests.first?.value(forHTTPHeaderField: "X-Amz-Security-Token") == token)
    }

    @Test("create on a server without conditional PUT: a read, then a plain PUT")
    func createWithoutConditionalWrites() async throws {
        let transport = ScriptedTransport([
            .respond(404, s3Error("NoSuchKey", "none")),
            .respond(501, s3Error("NotImplemented", "A header you provided implies functionality that is not implemented")),
            .respond(200),
        ])
        #expect(try await storage(transport).create("k", data: Data("x".utf8)))
        let sent = transport.requests
        #expect(sent.map { $0.method } == ["GET", "PUT", "PUT"])
        #expect(sent[1].value(forHTTPHeaderField: "If-None-Match") == "*")
        #expect(sent[2].value(forHTTPHeaderField: "If-None-Match") == nil)
    }

    @Test("a server that refuses checksums gets the multipart upload without them")
    func multipartWithoutChecksums() async throws {
        let transport = ScriptedTransport([
            .respond(400, s3Error("InvalidArgument", "x-amz-checksum-algorithm is not supported")),
            .respond(200, "<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"),
            .respond(200, "", ["etag": "\"e1\""]),
            .respond(200, "", ["etag": "\"e2\""]),
            .respond(200, "<CompleteMultipartUploadResult></CompleteMultipartUploadResult>"),
        ])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-parts-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(count: 9 * 1024 * 1024).write(to: file)
        let capture = S3LogCapture()
        try await storage(transport, capture: capture).upload(from: file, to: "big")
        let sent = transport.requests
        #expect(sent.map(\.method) == ["POST", "POST", "PUT", "PUT", "POST"])
        // The request log (dstack -v) says what each request was.
        let log = capture.all.filter { $0.hasPrefix("debug s3: ") && $0.contains(" -> ") }.map { $0.split(separator: " -> ")[0] }
        let said = log.map { String($0.dropFirst("debug s3: ".count)) }
        #expect(said.count == 5, "\(capture.all)")
        #expect(said.prefix(2) == ["POST 'prefix/big' (start multipart upload)", "POST 'prefix/big' (start multipart upload)"])
        #expect(Set(said.dropFirst(2).prefix(2)) == ["PUT 'prefix/big' part 1", "PUT 'prefix/big' part 2"])  // in parallel
        #expect(said.last == "POST 'prefix/big' (complete multipart upload)")
        #expect(sent[0].value(forHTTPHeaderField: "x-amz-checksum-algorithm") == "CRC32")
        #expect(sent[1].value(forHTTPHeaderField: "x-amz-checksum-algorithm") == nil)
        #expect(sent[2].value(forHTTPHeaderField: "x-amz-checksum-crc32") == nil)
        #expect(sent[3].value(forHTTPHeaderField: "x-amz-checksum-crc32") == nil)
    }

    @Test("addressing: an endpoint is path-style; AWS is virtual-hosted, or path-style for dotted bucket names")
    func addressing() async throws {
        let endpoint = ScriptedTransport([.respond(200, "x")])
        _ = try await storage(endpoint, url: "s3://bucket/pre fix", endpoint: "http://localhost:9000").read("a b")
        #expect(endpoint.requests.first?.url.absoluteString == "http://localhost:9000/bucket/pre%20fix/a%20b")

        let aws = ScriptedTransport([.respond(200, "x")])
        _ = try await storage(aws, url: "s3://bucket/p", endpoint: nil).read("k")
        #expect(aws.requests.first?.url.absoluteString == "https://bucket.s3.eu-west-1.amazonaws.com/p/k")
        #expect(aws.requests.first?.value(forHTTPHeaderField: "Authorization")?.contains("/eu-west-1/s3/aws4_request") == true)

        let dotted = ScriptedTransport([.respond(200, "x")])
        _ = try await storage(dotted, url: "s3://my.bucket", endpoint: nil).read("k")
        #expect(dotted.requests.first?.url.absoluteString == "https://s3.eu-west-1.amazonaws.com/my.bucket/k")

        let listing = ScriptedTransport([.respond(200, "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")])
        _ = try await storage(listing, url: "s3://bucket/p").list(prefix: "runs/")
        #expect(listing.requests.first?.url.absoluteString == "http://127.0.0.1:9/bucket?list-type=2&prefix=p%2Fruns%2F")
    }
}
