import Crypto
import Foundation

/// AWS credentials for signing; printing them never shows the secret or the session token.
struct AWSCredentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The public half, safe to show in messages (`AKIA...`).
    var accessKeyId: String
    /// The secret half; never put it in a message, a log line or a description.
    var secretAccessKey: String
    /// A temporary session token (STS), sent as `x-amz-security-token`.
    var sessionToken: String?

    var description: String { "access key id '\(accessKeyId)'" }
    var debugDescription: String { "AWSCredentials(accessKeyId: \(accessKeyId), secretAccessKey: <redacted>)" }
    var customMirror: Mirror { Mirror(self, children: ["accessKeyId": accessKeyId], displayStyle: .struct) }
}

/// The parts of an HTTP request that AWS Signature Version 4 covers.
struct SigV4Request: Sendable {
    /// The HTTP method, upper case.
    var method: String
    /// The decoded path (`/bucket/my key`); the signer encodes it, and the URL must carry `SigV4.encodePath(path)`.
    var path: String
    /// Decoded query parameters in any order; an empty value stands for a bare `?name`.
    var query: [(name: String, value: String)] = []
    /// Headers to sign, in the order they will be sent; `host` must be among them, duplicates allowed.
    var headers: [(name: String, value: String)]
    /// The hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
    var payloadHash: String
}

/// What signing produced: the headers to add to the request, and the intermediate texts for tests.
struct SigV4Signature: Sendable {
    /// The canonical request (task 1 of the algorithm).
    var canonicalRequest: String
    /// The string to sign (task 2).
    var stringToSign: String
    /// The hex signature (task 3).
    var signature: String
    /// The value of the `Authorization` header.
    var authorization: String
    /// Every header the signer added (`X-Amz-Date`, maybe `X-Amz-Security-Token`, `x-amz-content-sha256`,
    /// `Authorization`), to send along with the request's own.
    var addedHeaders: [(name: String, value: String)]
}

/// AWS Signature Version 4 (`AWS4-HMAC-SHA256`) for request headers, checked against AWS's published test suite.
struct SigV4Signer: Sendable {
    /// Who signs.
    var credentials: AWSCredentials
    /// The region in the credential scope (`us-east-1`).
    var region: String
    /// The service in the credential scope (`s3`, `iam`).
    var service: String
    /// Whether to remove `.`/`..` segments and repeated slashes from the path first (every service but S3).
    var normalizePath: Bool
    /// Whether the session token is among the signed headers (S3: yes; a few services add it after signing).
    var signSessionToken: Bool = true
    /// Whether to send and sign `x-amz-content-sha256` (S3 requires it).
    var sendsContentSHA256: Bool

    /// A signer as S3 wants it: path as is, content hash header, session token signed.
    static func s3(credentials: AWSCredentials, region: String) -> SigV4Signer {
        SigV4Signer(credentials: credentials, region: region, service: "s3", normalizePath: false, sendsContentSHA256: true)
    }

    /// Signs `request` as of `date`.
    func sign(_ request: SigV4Request, at date: Date) -> SigV4Signature {
        let (amzDate, day) = SigV4.timestamps(date)
        var headers = request.headers
        var added: [(name: String, value: String)] = [("X-Amz-Date", amzDate)]
        if let token = credentials.sessionToken, signSessionToken {
            added.append(("X-Amz-Security-Token", token))
        }
        if sendsContentSHA256 {
            added.append(("x-amz-content-sha256", request.payloadHash))
        }
        headers += added

        let canonicalHeaders = SigV4.canonicalHeaders(headers)
        let signedHeaders = canonicalHeaders.map(\.name).joined(separator: ";")
        let path = normalizePath ? SigV4.normalize(request.path) : request.path
        let canonicalRequest = [
            request.method,
            SigV4.encodePath(path),
            SigV4.canonicalQuery(request.query),
            canonicalHeaders.map { "\($0.name):\($0.value)\n" }.joined(),
            signedHeaders,
            request.payloadHash,
        ].joined(separator: "\n")

        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, SigV4.hexSHA256(Data(canonicalRequest.utf8)),
        ].joined(separator: "\n")

        let signature = SigV4.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: signingKey(day: day)))
        let authorization = "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyId)/\(scope), "
            + "SignedHeaders=\(signedHeaders), Signature=\(signature)"

        if let token = credentials.sessionToken, !signSessionToken {
            added.append(("X-Amz-Security-Token", token))
        }
        added.append(("Authorization", authorization))
        return SigV4Signature(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature,
            authorization: authorization, addedHeaders: added
        )
    }
}

/// What query signing (a presigned URL) produced: the query to send, and the intermediate texts for tests.
struct SigV4Presigned: Sendable {
    /// The canonical request (task 1 of the algorithm).
    var canonicalRequest: String
    /// The string to sign (task 2).
    var stringToSign: String
    /// The hex signature (task 3).
    var signature: String
    /// The request's own parameters, the `X-Amz-*` ones and `X-Amz-Signature`, decoded: the whole query to send.
    var query: [(name: String, value: String)]
}

extension SigV4Signer {
    /// Signs `request` in its query string (a presigned URL valid for `expires` seconds from `date`).
    ///
    /// The same algorithm as `sign(_:at:)`, with the credential scope, date, lifetime and signed header names in
    /// the query instead of headers, and no `x-amz-content-sha256`: S3 wants `UNSIGNED-PAYLOAD` as the payload
    /// hash, since whoever uses the URL sends the body. Whoever holds the URL holds the session token too, when
    /// the credentials have one: callers that must not hand one out check `credentials.sessionToken` first.
    func presign(_ request: SigV4Request, at date: Date, expires: Int) -> SigV4Presigned {
        let (amzDate, day) = SigV4.timestamps(date)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let canonicalHeaders = SigV4.canonicalHeaders(request.headers)
        let signedHeaders = canonicalHeaders.map(\.name).joined(separator: ";")
        var query = request.query
        query += [
            ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
            ("X-Amz-Credential", "\(credentials.accessKeyId)/\(scope)"),
            ("X-Amz-Date", amzDate),
            ("X-Amz-Expires", String(expires)),
            ("X-Amz-SignedHeaders", signedHeaders),
        ]
        if let token = credentials.sessionToken, signSessionToken { query.append(("X-Amz-Security-Token", token)) }
        let path = normalizePath ? SigV4.normalize(request.path) : request.path
        let canonicalRequest = [
            request.method,
            SigV4.encodePath(path),
            SigV4.canonicalQuery(query),
            canonicalHeaders.map { "\($0.name):\($0.value)\n" }.joined(),
            signedHeaders,
            request.payloadHash,
        ].joined(separator: "\n")
        let stringToSign = [
            "AWS4-HMAC-SHA256", amzDate, scope, SigV4.hexSHA256(Data(canonicalRequest.utf8)),
        ].joined(separator: "\n")
        let signature = SigV4.hex(HMAC<SHA256>.authenticationCode(for: Data(stringToSign.utf8), using: signingKey(day: day)))
        if let token = credentials.sessionToken, !signSessionToken { query.append(("X-Amz-Security-Token", token)) }
        query.append(("X-Amz-Signature", signature))
        return SigV4Presigned(canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature, query: query)
    }

    /// The key derived from the secret for `day` (`yyyyMMdd`), the region and the service.
    func signingKey(day: String) -> SymmetricKey {
        var key = SymmetricKey(data: Data("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(part.utf8), using: key)))
        }
        return key
    }
}

/// The encoding and hashing rules of Signature Version 4, shared by the signer and whoever builds the URL.
enum SigV4 {
    /// The hex SHA-256 of an empty body.
    static let emptyPayloadHash = hexSHA256(Data())

    /// Percent-encodes every byte but the RFC 3986 unreserved ones (`A-Z a-z 0-9 - . _ ~`), and `/` if asked.
    static func encode(_ string: String, keepingSlash: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(string.utf8.count)
        let hexDigits = Array("0123456789ABCDEF".unicodeScalars)
        for byte in string.utf8 {
            if isUnreserved(byte) || (keepingSlash && byte == UInt8(ascii: "/")) {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(hexDigits[Int(byte >> 4)])
                out.unicodeScalars.append(hexDigits[Int(byte & 0xF)])
            }
        }
        return out
    }

    /// The path as it goes on the wire and into the canonical request (each segment encoded once).
    static func encodePath(_ path: String) -> String {
        encode(path.isEmpty ? "/" : path, keepingSlash: true)
    }

    /// The canonical (and wire) query string: names and values encoded, sorted by name then value.
    static func canonicalQuery(_ query: [(name: String, value: String)]) -> String {
        let encoded: [(name: String, value: String)] = query.map { (encode($0.name), encode($0.value)) }
        // The encoded texts are ASCII, so String order is byte order, as AWS wants.
        let sorted = encoded.sorted { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        return sorted.map { pair in pair.name + "=" + pair.value }.joined(separator: "&")
    }

    /// Lower-cased names, sorted; values trimmed with inner whitespace runs collapsed; repeats joined by commas.
    static func canonicalHeaders(_ headers: [(name: String, value: String)]) -> [(name: String, value: String)] {
        var merged: [String: [String]] = [:]
        for (name, value) in headers {
            merged[name.lowercased(), default: []].append(collapseWhitespace(value))
        }
        return merged.keys.sorted().map { ($0, merged[$0]!.joined(separator: ",")) }
    }

    /// Removes `.` and `..` segments and empty segments, keeping a trailing slash (RFC 3986 §5.2.4, as AWS does).
    static func normalize(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": _ = segments.popLast()
            default: segments.append(segment)
            }
        }
        let joined = "/" + segments.joined(separator: "/")
        return path.hasSuffix("/") && joined != "/" ? joined + "/" : joined
    }

    /// `20150830T123600Z` and `20150830` for `date`, in UTC.
    static func timestamps(_ date: Date) -> (amzDate: String, day: String) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ n: Int?) -> String { n.map { $0 < 10 ? "0\($0)" : "\($0)" } ?? "00" }
        let day = String(c.year ?? 1970) + two(c.month) + two(c.day)
        return (day + "T" + two(c.hour) + two(c.minute) + two(c.second) + "Z", day)
    }

    /// Lower-case hex SHA-256 of `data`.
    static func hexSHA256(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    /// The lower-case hex SHA-256 and the CRC-32 of `length` bytes of `file` from `offset`, read a chunk at a time
    /// (a part's payload hash and checksum, without the part in memory); a file that ends early is a
    /// `StorageError.refused`.
    static func digests(file: URL, offset: Int64, length: Int64) throws -> (sha256: String, crc32: CRC32) {
        let reader = try FileRangeReader(path: file.path)
        var sha256 = SHA256()
        var crc32 = CRC32()
        let buffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: Int(min(Int64(HTTPClientTransport.chunkSize), max(1, length))), alignment: 16)
        defer { buffer.deallocate() }
        var position = offset
        while position < offset + length {
            let wanted = Int(min(Int64(buffer.count), offset + length - position))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[..<wanted])
            guard try reader.read(into: chunk, at: position) == wanted else { throw reader.shrank }
            sha256.update(bufferPointer: UnsafeRawBufferPointer(chunk))
            crc32.update(UnsafeRawBufferPointer(chunk))
            position += Int64(wanted)
        }
        return (hex(sha256.finalize()), crc32)
    }

    /// Lower-case hex of any byte sequence (digests, MACs).
    static func hex<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x41...0x5A, 0x61...0x7A, 0x30...0x39: return true  // A-Z a-z 0-9
        case 0x2D, 0x2E, 0x5F, 0x7E: return true  // - . _ ~
        default: return false
        }
    }

    private static func collapseWhitespace(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" })
            .joined(separator: " ")
    }
}
