import Foundation
import Testing

@testable import DstackStorage

/// One case of AWS's SigV4 test suite, read from `Fixtures/sigv4/<name>/`.
struct SigV4Case: CustomTestStringConvertible {
    struct Context: Decodable {
        struct Credentials: Decodable {
            var access_key_id: String
            var secret_access_key: String
            var token: String?
        }
        var credentials: Credentials
        var region: String
        var service: String
        var timestamp: String
        var normalize: Bool
        var sign_body: Bool
        var omit_session_token: Bool?
    }

    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/sigv4")

    /// Every case folder in the fixtures.
    static let names: [String] = {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return entries.filter { !$0.contains(".") && $0 != "LICENSE" }.sorted()
    }()

    var name: String
    var testDescription: String { name }

    func text(_ file: String) throws -> String {
        try String(contentsOf: Self.folder.appendingPathComponent(name).appendingPathComponent(file), encoding: .utf8)
    }

    /// The request, context and signer the case describes.
    func load() throws -> (request: SigV4Request, signer: SigV4Signer, date: Date) {
        let context = try JSONDecoder().decode(Context.self, from: Data(try text("context.json").utf8))
        var lines = try text("request.txt").components(separatedBy: "\n")
        let requestLine = lines.removeFirst()
        let method = String(requestLine.prefix { $0 != " " })
        let target = String(requestLine.dropFirst(method.count + 1).dropLast(" HTTP/1.1".count))
        var headers: [(name: String, value: String)] = []
        while let line = lines.first, !line.isEmpty {
            lines.removeFirst()
            if line.first == " " || line.first == "\t" {
                headers[headers.count - 1].value += "\n" + line  // a folded (multi-line) value
            } else if let colon = line.firstIndex(of: ":") {
                headers.append((String(line[..<colon]), String(line[line.index(after: colon)...])))
            }
        }
        let body = Data(lines.dropFirst().joined(separator: "\n").utf8)
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let query: [(name: String, value: String)] = parts.count < 2 ? [] : parts[1].split(separator: "&").map { pair in
            let nameValue = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (s: Substring) in s.removingPercentEncoding ?? String(s) }
            return (decode(nameValue[0]), nameValue.count > 1 ? decode(nameValue[1]) : "")
        }
        let credentials = AWSCredentials(
            accessKeyId: context.credentials.access_key_id,
            secretAccessKey: context.credentials.secret_access_key,
            sessionToken: context.credentials.token)
        let signer = SigV4Signer(
            credentials: credentials, region: context.region, service: context.service,
            normalizePath: context.normalize, signSessionToken: !(context.omit_session_token ?? false),
            sendsContentSHA256: context.sign_body)
        let request = SigV4Request(
            method: method, path: String(parts[0]).removingPercentEncoding ?? String(parts[0]), query: query,
            headers: headers, payloadHash: SigV4.hexSHA256(body))
        return (request, signer, try Date(context.timestamp, strategy: .iso8601))
    }
}

@Suite("S3 SigV4: AWS's published test vectors and S3 examples")
struct S3SigV4Tests {
    @Test("the fixtures are there")
    func fixturesExist() {
        #expect(SigV4Case.names.count >= 30)
    }

    @Test("canonical request, string to sign and Authorization match", arguments: SigV4Case.names.map(SigV4Case.init))
    func vector(_ testCase: SigV4Case) throws {
        let (request, signer, date) = try testCase.load()
        let signature = signer.sign(request, at: date)

        #expect(signature.canonicalRequest == (try testCase.text("header-canonical-request.txt")))
        #expect(signature.stringToSign == (try testCase.text("header-string-to-sign.txt")))
        #expect(signature.signature == (try testCase.text("header-signature.txt")).trimmingCharacters(in: .whitespacesAndNewlines))
        let signedRequest = try testCase.text("header-signed-request.txt")
        let expectedAuthorization = signedRequest.components(separatedBy: "\n")
            .first { $0.hasPrefix("Authorization:") }.map { String($0.dropFirst("Authorization:".count)) }
        #expect(signature.authorization == expectedAuthorization)
        // Whatever the request carries must be sent too: the token, signed or not, and the date.
        for line in signedRequest.components(separatedBy: "\n") where line.hasPrefix("X-Amz-") {
            let name = String(line.prefix { $0 != ":" })
            #expect(signature.addedHeaders.contains { $0.name == name && name + ":" + $0.value == line })
        }
    }

    @Test("presigned URLs: canonical request, string to sign, signature and query match", arguments: SigV4Case.names.map(SigV4Case.init))
    func queryVector(_ testCase: SigV4Case) throws {
        let (request, signer, date) = try testCase.load()
        let presigned = signer.presign(request, at: date, expires: 3600)

        #expect(presigned.canonicalRequest == (try testCase.text("query-canonical-request.txt")))
        #expect(presigned.stringToSign == (try testCase.text("query-string-to-sign.txt")))
        #expect(presigned.signature == (try testCase.text("query-signature.txt")).trimmingCharacters(in: .whitespacesAndNewlines))
        // The suite's signed request lists the parameters in its own order; a server reads them in any order.
        // (Its request line is written as is: a path may hold a space, a value may be unencoded UTF-8.)
        let requestLine = try testCase.text("query-signed-request.txt").components(separatedBy: "\n")[0]
        let query = requestLine.dropLast(" HTTP/1.1".count).split(separator: "?", maxSplits: 1).last ?? ""
        let expected = query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map { $0.removingPercentEncoding ?? String($0) }
            return parts[0] + "=" + (parts.count > 1 ? parts[1] : "")
        }.sorted()
        #expect(presigned.query.map { $0.name + "=" + $0.value }.sorted() == expected)
    }

    @Test("S3's documented presigned GET example")
    func s3PresignedExample() throws {
        // "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)", Amazon S3 API reference.
        let signer = SigV4Signer.s3(
            credentials: AWSCredentials(
                accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1")
        let presigned = signer.presign(
            SigV4Request(method: "GET", path: "/test.txt", headers: [("host", "examplebucket.s3.amazonaws.com")],
                         payloadHash: "UNSIGNED-PAYLOAD"),
            at: try Date("2013-05-24T00:00:00Z", strategy: .iso8601), expires: 86400)
        #expect(presigned.signature == "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
        #expect(!presigned.query.contains { $0.name == "x-amz-content-sha256" })
    }

    /// The worked examples of AWS's S3 documentation ("Signature calculations for the Authorization header").
    @Test("S3's documented examples: GET with Range, PUT with a '$' key, ListObjects, ?lifecycle")
    func s3DocumentationExamples() throws {
        let signer = SigV4Signer.s3(
            credentials: AWSCredentials(
                accessKeyId: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            region: "us-east-1")
        let date = try Date("2013-05-24T00:00:00Z", strategy: .iso8601)
        let host = ("host", "examplebucket.s3.amazonaws.com")
        let empty = SigV4.emptyPayloadHash

        let get = signer.sign(
            SigV4Request(method: "GET", path: "/test.txt", headers: [host, ("Range", "bytes=0-9")], payloadHash: empty),
            at: date)
        #expect(get.signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
        #expect(get.canonicalRequest.contains("\nhost;range;x-amz-content-sha256;x-amz-date\n"))

        let body = Data("Welcome to Amazon S3.".utf8)
        let put = signer.sign(
            SigV4Request(
                method: "PUT", path: "/test$file.text",
                headers: [host, ("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
                payloadHash: SigV4.hexSHA256(body)),
            at: date)
        #expect(put.canonicalRequest.hasPrefix("PUT\n/test%24file.text\n"))
        #expect(put.signature == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd")

        let list = signer.sign(
            SigV4Request(method: "GET", path: "/", query: [("prefix", "J"), ("max-keys", "2")], headers: [host], payloadHash: empty),
            at: date)
        #expect(list.signature == "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")

        let lifecycle = signer.sign(
            SigV4Request(method: "GET", path: "/", query: [("lifecycle", "")], headers: [host], payloadHash: empty),
            at: date)
        #expect(lifecycle.canonicalRequest.contains("\nlifecycle=\n"))
        #expect(lifecycle.signature == "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543")
        #expect(lifecycle.addedHeaders.map(\.name) == ["X-Amz-Date", "x-amz-content-sha256", "Authorization"])
    }

    @Test("keys are encoded once, keeping '/' and the unreserved characters")
    func pathEncoding() {
        #expect(SigV4.encodePath("/b/proj/runs/a b+c/ሴ~.-_") == "/b/proj/runs/a%20b%2Bc/%E1%88%B4~.-_")
        #expect(SigV4.encode("a/b=c&d") == "a%2Fb%3Dc%26d")
        #expect(SigV4.canonicalQuery([("prefix", "p/q r"), ("list-type", "2"), ("a", "2"), ("a", "1")])
            == "a=1&a=2&list-type=2&prefix=p%2Fq%20r")
    }

    @Test("credentials never print their secret")
    func credentialsDescription() {
        let credentials = AWSCredentials(accessKeyId: "AKIDPUBLIC", secretAccessKey: "s3cr3t-value", sessionToken: "t0ken-value")
        for text in ["\(credentials)", String(reflecting: credentials)] {
            #expect(text.contains("AKIDPUBLIC"))
            #expect(!text.contains("s3cr3t-value"))
            #expect(!text.contains("t0ken-value"))
        }
    }
}

@Suite("part digests: CRC-32 and SHA-256 of a file range")
struct S3PartDigestTests {
    @Test("CRC-32 matches zlib's check values, whatever the chunking")
    func crc32() {
        func crc(_ chunks: [[UInt8]]) -> CRC32 {
            var crc = CRC32()
            for chunk in chunks { chunk.withUnsafeBytes { crc.update($0) } }
            return crc
        }
        #expect(crc([]).value == 0)
        #expect(crc([Array("123456789".utf8)]).value == 0xCBF4_3926)
        #expect(crc([Array("123456789".utf8)]).base64 == "y/Q5Jg==")
        let text = Array("The quick brown fox jumps over the lazy dog".utf8)
        #expect(crc([text]).value == 0x414F_A339)
        #expect(crc([Array(text[..<3]), Array(text[3..<20]), Array(text[20...])]).value == 0x414F_A339)

        // Long input in uneven chunks against the bit-at-a-time definition.
        let long = (0..<100_003).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
        var reference: UInt32 = 0xFFFF_FFFF
        for byte in long {
            reference ^= UInt32(byte)
            for _ in 0..<8 { reference = reference & 1 != 0 ? (reference >> 1) ^ 0xEDB8_8320 : reference >> 1 }
        }
        var chunks: [[UInt8]] = []
        var start = 0
        for size in [1, 15, 16, 17, 4_095, 33, 65_536] where start < long.count {
            chunks.append(Array(long[start..<min(long.count, start + size)]))
            start += size
        }
        chunks.append(Array(long[start...]))
        #expect(crc(chunks).value == ~reference)
        #expect(crc([long]).value == ~reference)
    }

    @Test("a range of a file: the digests of exactly those bytes; a file that ends early is refused")
    func fileRange() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-digest-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 7) }
        try Data(bytes).write(to: file)
        let slice = Array(bytes[1_000_001..<2_900_000])
        let digests = try SigV4.digests(file: file, offset: 1_000_001, length: Int64(slice.count))
        #expect(digests.sha256 == SigV4.hexSHA256(Data(slice)))
        var expected = CRC32()
        slice.withUnsafeBytes { expected.update($0) }
        #expect(digests.crc32.value == expected.value)
        #expect(throws: StorageError.self) { _ = try SigV4.digests(file: file, offset: 2_000_000, length: 1_000_001) }
    }
}
