// The only file that touches the HTTP stack (AsyncHTTPClient on SwiftNIO); docs/storage.md says why that one.
import AsyncHTTPClient
import DstackModel
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A request body that can be sent again when a request is retried.
enum S3Body: Sendable {
    /// No body.
    case empty
    /// Bytes in memory (small objects, XML documents).
    case data(Data)
    /// `length` bytes of a file from `offset` (a multipart part, a file uploaded in one PUT), read as it is sent.
    case file(URL, offset: Int64, length: Int64)
}

/// An HTTP request as the S3 client sends it: signed, with its headers in order.
struct S3HTTPRequest: Sendable {
    /// The HTTP method.
    var method: String
    /// The full URL, query included.
    var url: URL
    /// Headers in the order they are sent.
    var headers: [(name: String, value: String)] = []

    /// The value of header `name` (any case), the last one if it repeats.
    func value(forHTTPHeaderField name: String) -> String? {
        let wanted = name.lowercased()
        return headers.last { $0.name.lowercased() == wanted }?.value
    }
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

/// Sends one signed request; AsyncHTTPClient in production, a scripted stand-in in tests.
protocol S3Transport: Sendable {
    /// Sends `request` with `body`; with `toFile`, a 2xx body is written to a temporary file instead of memory.
    ///
    /// Failures to get an HTTP answer are thrown as `URLError`s (the codes S3Client sorts into retryable or not),
    /// cancellation as `URLError(.cancelled)` or `CancellationError`, a local file problem as `StorageError`.
    func send(_ request: S3HTTPRequest, body: S3Body, toFile: Bool) async throws -> S3HTTPResponse
}

/// The production transport: one `HTTPClient` (a pool of HTTP/1.1 keep-alive connections) for the life of an
/// `S3Storage`, on NIO's process-wide event loop group.
///
/// Bodies are streamed both ways in chunks of `chunkSize`: a file range is read with `pread` as the connection takes
/// it, and a download is written to its file as it arrives, so no transfer is ever whole in memory.
final class HTTPClientTransport: S3Transport {
    /// The size of the chunks read from a file for a request body (and to hash a part).
    ///
    /// Under the 1 MiB from which `DstackCommand.main` has glibc map allocations afresh: 1 MiB chunks were each a new
    /// mapping, faulted in and zeroed page by page, a third of the upload's system time (1 GiB to moto: 2.5 s of
    /// CPU with 1 MiB chunks, 2.1 s with 256 KiB ones; docs/benchmarks.md).
    static let chunkSize = 256 * 1024

    private let client: HTTPClient

    /// Creates a client that follows no redirects (a redirected request would carry a signature for another host),
    /// keeps up to `connectionsPerHost` connections per host, and reports a refused connection at once.
    init(connectionsPerHost: Int = 16) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            // Idle limits, as URLSession's timeoutIntervalForRequest was: a slow but moving transfer is not cut.
            timeout: .init(connect: .seconds(30), read: .seconds(120), write: .seconds(120)),
            decompression: .disabled)
        configuration.httpVersion = .http1Only
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = connectionsPerHost
        // Otherwise a refused connection is retried with backoff until the connect timeout; S3Client retries.
        configuration.connectionPool.retryConnectionEstablishment = false
        client = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, configuration: configuration)
    }

    deinit {
        // Not awaited: the client keeps itself alive until its connections are closed. The event loop group is
        // the process-wide singleton, which is never shut down, so nothing waits for it at exit.
        client.shutdown { _ in }
    }

    func send(_ request: S3HTTPRequest, body: S3Body, toFile: Bool) async throws -> S3HTTPResponse {
        var outgoing = HTTPClientRequest(url: request.url.absoluteString)
        outgoing.method = HTTPMethod(rawValue: request.method)
        for (name, value) in request.headers {
            outgoing.headers.add(name: name, value: value)
        }
        switch body {
        case .empty:
            break
        case .data(let data):
            outgoing.body = .bytes(ByteBuffer(bytes: data))
        case .file(let file, let offset, let length):
            outgoing.body = .stream(
                FileRangeChunks(path: file.path, offset: offset, length: length, chunkSize: Self.chunkSize),
                length: .known(length))
        }
        do {
            let response = try await client.execute(outgoing, deadline: .distantFuture)
            var result = S3HTTPResponse(status: Int(response.status.code))
            for (name, value) in response.headers {
                let name = name.lowercased()
                result.headers[name] = result.headers[name].map { "\($0), \(value)" } ?? value
            }
            if toFile, (200..<300).contains(result.status) {
                result.file = try await Self.receive(response.body)
            } else {
                // An error document (wanted in memory to read its code), or a small object.
                let expected = response.headers.first(name: "content-length").flatMap(Int.init) ?? 0
                var data = Data(capacity: min(expected, 64 * 1024 * 1024))
                for try await buffer in response.body {
                    buffer.withUnsafeReadableBytes { data.append(contentsOf: $0) }
                }
                result.body = data
            }
            return result
        } catch let error as StorageError {
            throw error
        } catch {
            throw Self.translate(error)
        }
    }

    /// Writes a response body to a new temporary file as it arrives; the file is removed if anything fails.
    private static func receive(_ body: HTTPClientResponse.Body) async throws -> URL {
        let file = FileManager.default.temporaryDirectory
            .appendingPathComponent("dstack-s3-\(UUID().uuidString).download")
        let descriptor = open(file.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw StorageError.refused("cannot create '\(file.path)' for a download: \(reason)")
        }
        var closed = false
        let observer = TransferObserver.current
        do {
            defer { if !closed { close(descriptor) } }
            for try await buffer in body {
                try buffer.withUnsafeReadableBytes { try writeAll($0, to: descriptor, file: file) }
                observer?.moved(Int64(buffer.readableBytes))
            }
            closed = true
            guard close(descriptor) == 0 else { throw writeFailure(file) }
            return file
        } catch {
            unlink(file.path)
            throw error
        }
    }

    private static func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32, file: URL) throws {
        var done = 0
        while done < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if written < 0 {
                if errno == EINTR { continue }
                throw writeFailure(file)
            }
            done += written
        }
    }

    private static func writeFailure(_ file: URL) -> StorageError {
        .refused("cannot write the download to '\(file.path)': \(String(cString: strerror(errno)))")
    }

    /// The `URLError` that S3Client expects for a failure of the HTTP stack, keeping its text for messages.
    static func translate(_ error: any Error) -> any Error {
        if error is CancellationError { return error }
        let code: URLError.Code
        switch error {
        case let failure as HTTPClientError:
            switch failure {
            case .cancelled: code = .cancelled
            case .connectTimeout, .readTimeout, .writeTimeout, .deadlineExceeded: code = .timedOut
            case .remoteConnectionClosed: code = .networkConnectionLost
            case .tlsHandshakeTimeout: code = .secureConnectionFailed
            case .invalidURL, .emptyHost, .emptyScheme: code = .badURL
            default: return error
            }
        case ChannelError.connectTimeout:
            code = .timedOut
        case ChannelError.ioOnClosedChannel, ChannelError.eof, ChannelError.outputClosed, ChannelError.inputClosed:
            code = .networkConnectionLost
        case is NIOSSLError, is BoringSSLError:
            code = .secureConnectionFailed
        case let failure as NIOConnectionError:
            if failure.connectionErrors.isEmpty, failure.dnsAError != nil || failure.dnsAAAAError != nil {
                code = .cannotFindHost
            } else if let first = failure.connectionErrors.first {
                return translate(first.error)
            } else {
                code = .cannotConnectToHost
            }
        case let failure as IOError:
            switch failure.errnoCode {
            case ECONNREFUSED, ENETUNREACH, EHOSTUNREACH, EADDRNOTAVAIL: code = .cannotConnectToHost
            case ECONNRESET, EPIPE, ECONNABORTED: code = .networkConnectionLost
            case ETIMEDOUT: code = .timedOut
            default: code = .unknown
            }
        case is HTTPParserError:
            code = .cannotParseResponse
        default:
            return error
        }
        return URLError(code, userInfo: [NSLocalizedDescriptionKey: "\(error)"])
    }
}

/// An open file that is read at given offsets; closed when the last reference to it goes.
final class FileRangeReader: Sendable {
    let path: String
    private let descriptor: Int32

    /// Opens `path` for reading; a failure is a `StorageError.refused` that names the file.
    init(path: String) throws {
        self.path = path
        descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw StorageError.refused("cannot read '\(path)' to upload it: \(String(cString: strerror(errno)))")
        }
    }

    deinit { close(descriptor) }

    /// Fills `buffer` from `offset`, short only at the end of the file; returns the number of bytes read.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int64) throws -> Int {
        var done = 0
        while done < buffer.count {
            let got = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if got < 0 {
                if errno == EINTR { continue }
                throw StorageError.refused("cannot read '\(path)' to upload it: \(String(cString: strerror(errno)))")
            }
            if got == 0 { break }
            done += got
        }
        return done
    }

    /// The error for a file that ended before the range that was to be sent.
    var shrank: StorageError {
        .refused("'\(path)' changed while it was being uploaded; upload it again")
    }
}

/// A file range as a sequence of buffers of up to `chunkSize` bytes, read when asked for (a request body).
struct FileRangeChunks: AsyncSequence, Sendable {
    typealias Element = ByteBuffer

    var path: String
    var offset: Int64
    var length: Int64
    var chunkSize: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let path: String
        var reader: FileRangeReader?
        var position: Int64
        let end: Int64
        let chunkSize: Int
        let allocator = ByteBufferAllocator()

        mutating func next() async throws -> ByteBuffer? {
            guard position < end else {
                reader = nil
                return nil
            }
            let reader = try self.reader ?? FileRangeReader(path: path)
            self.reader = reader
            let wanted = Int(Swift.min(Int64(chunkSize), end - position))
            var buffer = allocator.buffer(capacity: wanted)
            let position = self.position
            let got = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: wanted) { free in
                try reader.read(into: UnsafeMutableRawBufferPointer(rebasing: free[..<wanted]), at: position)
            }
            guard got == wanted else { throw reader.shrank }
            self.position += Int64(got)
            return buffer
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(path: path, position: offset, end: offset + length, chunkSize: chunkSize)
    }
}
