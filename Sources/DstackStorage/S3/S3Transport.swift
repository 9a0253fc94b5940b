// The only file that touches URLSession; S3Client.swift says why it is URLSession.
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A request body that can be sent again when a request is retried.
enum S3Body: Sendable {
    /// No body.
    case empty
    /// Bytes in memory (small objects, one multipart part, XML documents).
    case data(Data)
}

/// An HTTP response as the S3 client needs it.
struct S3HTTPResponse: Sendable {
    /// The HTTP status code.
    var status: Int
    /// Header values by lower-cased name.
    var headers: [String: String] = [:]
    /// The body, unless it went to `file`.
    var body: Data = Data()
    /// For a successful download, the temporary file that holds the body; the caller moves or removes it.
    var file: URL?
}

/// Sends one signed request; URLSession in production, a scripted stand-in in tests.
protocol S3Transport: Sendable {
    /// Sends `request` with `body`; with `toFile`, a 2xx body is written to a temporary file instead of memory.
    func send(_ request: URLRequest, body: S3Body, toFile: Bool) async throws -> S3HTTPResponse
}

/// The production transport: one URLSession for the life of an `S3Storage`.
final class URLSessionTransport: S3Transport {
    private let session: URLSession

    /// Creates a session that caches nothing and keeps a few connections per host.
    init() {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.requestCachePolicy = .reloadIgnoringLocalCacheData
        configuration.urlCache = nil
        configuration.httpCookieStorage = nil
        configuration.httpShouldSetCookies = false
        configuration.httpMaximumConnectionsPerHost = 8
        configuration.timeoutIntervalForRequest = 120
        session = URLSession(configuration: configuration)
    }

    deinit {
        session.finishTasksAndInvalidate()
    }

    func send(_ request: URLRequest, body: S3Body, toFile: Bool) async throws -> S3HTTPResponse {
        let data: Data
        let response: URLResponse
        var file: URL?
        switch body {
        case .empty where toFile:
            (file, response) = try await session.download(for: request)
            data = Data()
        case .empty:
            (data, response) = try await session.data(for: request)
        case .data(let bytes):
            (data, response) = try await session.upload(for: request, from: bytes)
        }
        guard let http = response as? HTTPURLResponse else {
            if let file { try? FileManager.default.removeItem(at: file) }
            throw URLError(.badServerResponse)
        }
        var headers: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String { headers[name.lowercased()] = "\(value)" }
        }
        var result = S3HTTPResponse(status: http.statusCode, headers: headers, body: data, file: file)
        if let file, !(200..<300).contains(http.statusCode) {
            // An error document, not the object: small, and wanted in memory to read its code.
            result.body = (try? Data(contentsOf: file)) ?? Data()
            result.file = nil
            try? FileManager.default.removeItem(at: file)
        }
        return result
    }
}
