// HTTP goes through AsyncHTTPClient (S3Transport.swift), the only file that knows it; docs/storage.md says why.
import Foundation
import Logging

/// Knobs of the S3 client; the defaults are the product's, tests shrink them.
struct S3Tuning: Sendable {
    /// Attempts per request, the first included, before a retryable failure is reported.
    var maxAttempts = 4
    /// The first backoff delay; each retry waits up to twice as long as the one before (with jitter).
    var baseDelay: Duration = .milliseconds(250)
    /// The smallest multipart part, and the size up to which a file goes in one PUT.
    var minimumPartSize = 8 * 1024 * 1024
    /// The largest part chosen while a file fits in 10,000 parts of this size.
    var maximumPartSize = 64 * 1024 * 1024
    /// Parts uploaded at the same time.
    var partsInFlight = 4
    /// Called before each part is sent (part numbers start at 1); tests throw from it to make an upload fail.
    var beforePart: (@Sendable (Int) async throws -> Void)?
}

/// One S3 request before signing.
struct S3Request: Sendable {
    /// The HTTP method.
    var method: String
    /// The full object key (storage prefix included); nil for a request on the bucket itself.
    var key: String?
    /// Decoded query parameters.
    var query: [(name: String, value: String)] = []
    /// Extra headers, signed but for `Content-Type` (`If-None-Match`, `Content-MD5`...).
    var headers: [(name: String, value: String)] = []
    /// The body.
    var body: S3Body = .empty
    /// Whether a successful response body goes to a temporary file.
    var toFile = false
    /// The hex SHA-256 of the body, when the caller has already read it (a part, hashed with its checksum).
    var payloadHash: String?
}

/// Signs, sends and retries S3 requests, and turns failures into `StorageError`s a person can act on.
final class S3Client: Sendable {
    /// Bucket, prefix, credentials, region and endpoint.
    let configuration: S3Configuration
    let tuning: S3Tuning
    let logger: Logger
    private let transport: any S3Transport
    let signer: SigV4Signer

    /// Creates a client; `transport` defaults to AsyncHTTPClient.
    init(configuration: S3Configuration, tuning: S3Tuning, logger: Logger, transport: (any S3Transport)? = nil) {
        self.configuration = configuration
        self.tuning = tuning
        self.logger = logger
        self.transport = transport ?? HTTPClientTransport()
        signer = .s3(credentials: configuration.credentials, region: configuration.region)
    }

    /// Sends `request`, retrying throttling, server errors and dropped connections with exponential backoff.
    ///
    /// Returns any 2xx response, and any response whose S3 error code is in `accepting` (`NoSuchKey`,
    /// `PreconditionFailed`...); every other outcome is thrown as a `StorageError`.
    func send(_ request: S3Request, accepting: Set<String> = []) async throws -> S3HTTPResponse {
        let what = "\(request.method) \(describe(request.key))\(Self.operation(request))"
        // Every body is signed rather than sent UNSIGNED-PAYLOAD; a file range is hashed once, read in chunks.
        let payloadHash: String
        switch request.body {
        case .empty: payloadHash = SigV4.emptyPayloadHash
        case .data(let data): payloadHash = SigV4.hexSHA256(data)
        case .file(let file, let offset, let length):
            payloadHash = try request.payloadHash ?? SigV4.digests(file: file, offset: offset, length: length).sha256
        }
        var attempt = 0
        while true {
            attempt += 1
            try Task.checkCancellation()
            let started = ContinuousClock.now
            let httpRequest = signed(request, payloadHash: payloadHash)
            let response: S3HTTPResponse
            do {
                response = try await transport.send(httpRequest, body: request.body, toFile: request.toFile)
            } catch let error as URLError where error.code == .cancelled {
                throw CancellationError()
            } catch let error as URLError {
                if Self.isTransient(error), attempt < tuning.maxAttempts {
                    logger.warning("s3: \(what): \(Self.describe(error)); retrying (attempt \(attempt + 1) of \(tuning.maxAttempts))")
                    try await backoff(attempt)
                    continue
                }
                throw unreachable(error, attempts: attempt)
            } catch is CancellationError {
                throw CancellationError()
            } catch let error as StorageError {
                throw error  // a local file that could not be read or written
            } catch {
                throw unusable("\(what) failed: \(error)")
            }
            let failure = (200..<300).contains(response.status) ? nil : S3ErrorInfo(response)
            logger.debug("s3: \(what) -> \(response.status)\(failure.map { " \($0.code)" } ?? "") in \(ContinuousClock.now - started)")
            guard let failure else { return response }
            if accepting.contains(failure.code) { return response }
            if failure.isRetryable, attempt < tuning.maxAttempts {
                logger.warning("s3: \(what) -> \(response.status) \(failure.code); retrying (attempt \(attempt + 1) of \(tuning.maxAttempts))")
                try await backoff(attempt)
                continue
            }
            throw self.failure(failure, request: request, attempts: attempt)
        }
    }

    /// A `StorageError.unusable` for this storage, with any secret scrubbed from the reason.
    func unusable(_ reason: String) -> StorageError {
        var reason = reason
        for secret in [configuration.credentials.secretAccessKey, configuration.credentials.sessionToken ?? ""]
        where secret.count >= 4 {
            reason = reason.replacingOccurrences(of: secret, with: "<redacted>")
        }
        return .unusable(location: configuration.location, reason: reason)
    }

    /// What a request's query makes of it, for the request log: `" part 3"`, `" (list 'runs/')"`...
    static func operation(_ request: S3Request) -> String {
        let query = Dictionary(request.query.map { ($0.name, $0.value) }, uniquingKeysWith: { first, _ in first })
        if let part = query["partNumber"] { return " part \(part)" }
        if query["uploads"] != nil { return request.method == "POST" ? " (start multipart upload)" : " (list multipart uploads)" }
        if query["uploadId"] != nil {
            return request.method == "POST" ? " (complete multipart upload)" : request.method == "DELETE" ? " (abort multipart upload)" : ""
        }
        if query["list-type"] != nil { return " (list '\(query["prefix"] ?? "")')" }
        if query["delete"] != nil { return " (delete several)" }
        return ""
    }

    /// `'key'` for an object, `bucket 'name'` for the bucket, for messages.
    func describe(_ key: String?) -> String {
        key.map { "'\($0)'" } ?? "bucket '\(configuration.bucket)'"
    }

    // MARK: - Building and signing

    /// The URL, host and decoded path that `request` goes to (path-style for an endpoint override).
    func target(_ request: S3Request) -> (url: URL, host: String, path: String) {
        let bucket = configuration.bucket
        let scheme: String
        var host: String
        var path: String
        if let endpoint = configuration.endpoint {
            scheme = endpoint.scheme?.lowercased() ?? "http"
            host = endpoint.host ?? "localhost"
            if host.contains(":") { host = "[\(host)]" }
            if let port = endpoint.port, port != (scheme == "https" ? 443 : 80) { host += ":\(port)" }
            let base = endpoint.path.hasSuffix("/") ? String(endpoint.path.dropLast()) : endpoint.path
            path = base + "/" + bucket + (request.key.map { "/" + $0 } ?? "")
        } else if bucket.contains(".") {
            // Virtual-hosted names with dots do not match AWS's TLS certificate.
            scheme = "https"
            host = "s3.\(configuration.region).amazonaws.com"
            path = "/" + bucket + (request.key.map { "/" + $0 } ?? "")
        } else {
            scheme = "https"
            host = "\(bucket).s3.\(configuration.region).amazonaws.com"
            path = "/" + (request.key ?? "")
        }
        let query = request.query.isEmpty ? "" : "?" + SigV4.canonicalQuery(request.query)
        let url = URL(string: "\(scheme)://\(host)\(SigV4.encodePath(path))\(query)")!
        return (url, host, path)
    }

    private func signed(_ request: S3Request, payloadHash: String) -> S3HTTPRequest {
        let (url, host, path) = target(request)
        let signature = signer.sign(
            SigV4Request(
                method: request.method, path: path, query: request.query,
                // Content-Type stays unsigned, as S3 does not ask for it.
                headers: [("host", host)] + request.headers.filter { $0.name.lowercased() != "content-type" },
                payloadHash: payloadHash),
            at: Date())
        // No Content-Type unless the request names one (as aws s3 cp): S3 then stores binary/octet-stream, and
        // moto's server reads an untyped body a third faster than one labelled application/octet-stream.
        return S3HTTPRequest(method: request.method, url: url, headers: request.headers + signature.addedHeaders)
    }

    private func backoff(_ attempt: Int) async throws {
        let ceiling = tuning.baseDelay * (1 << min(attempt - 1, 16))
        try await Task.sleep(for: ceiling / 2 + ceiling / 2 * Double.random(in: 0...1))
    }
}
