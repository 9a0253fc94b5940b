import Crypto
import Foundation

extension S3Client {
    /// A presigned URL for `request` (whose body, if any, is sent by whoever uses the URL), valid for `lifetime`.
    func presign(_ request: S3Request, lifetime: Duration) -> String {
        let (_, host, path) = target(request)
        let presigned = signer.presign(
            SigV4Request(method: request.method, path: path, query: request.query, headers: [("host", host)],
                         payloadHash: "UNSIGNED-PAYLOAD"),
            at: Date(), expires: Int(lifetime.components.seconds))
        var signed = request
        signed.query = presigned.query
        return target(signed).url.absoluteString
    }
}

extension S3Storage: DirectStorage {
    public var directRefusal: String? {
        // A presigned URL made with temporary credentials carries their session token in its query: a runner
        // holding it could use the token for anything the coordinator may do, until it expires.
        client.configuration.credentials.sessionToken == nil ? nil
            : "the bucket's credentials are temporary (AWS_SESSION_TOKEN), and every URL signed with them carries the token"
    }

    public func directDownloadURL(_ key: String, lifetime: Duration) throws -> String {
        client.presign(S3Request(method: "GET", key: try objectKey(key)), lifetime: lifetime)
    }

    public func beginDirectUpload(_ key: String, size: Int64, lifetime: Duration) async throws -> DirectUpload {
        let fullKey = try objectKey(key)
        if size <= Int64(client.tuning.minimumPartSize) {
            let url = client.presign(S3Request(method: "PUT", key: fullKey), lifetime: lifetime)
            return DirectUpload(key: key, size: size, partSize: max(size, 1), urls: [url], uploadId: nil)
        }
        // Bigger parts than the coordinator's own (up to 64 MiB, some 16 per file): each part costs the runner a
        // tool start, a copy and a request, and a runner sends 4 at a time.
        let mib: Int64 = 1024 * 1024
        let sixteenth = min(Int64(client.tuning.maximumPartSize), (size / 16 + mib - 1) / mib * mib)
        let partSize = max(Int64(Self.partSize(forFileSize: size, tuning: client.tuning)), sixteenth)
        let partCount = Int((size + partSize - 1) / partSize)
        let started = try await client.send(S3Request(method: "POST", key: fullKey, query: [("uploads", "")]))
        guard let uploadId = S3XMLElement.parse(started.body)?.text(of: "UploadId"), !uploadId.isEmpty else {
            throw client.unusable("starting a multipart upload of \(client.describe(fullKey)) returned no upload id")
        }
        let urls = (1...partCount).map { number in
            client.presign(S3Request(method: "PUT", key: fullKey, query: [("partNumber", "\(number)"), ("uploadId", uploadId)]),
                           lifetime: lifetime)
        }
        return DirectUpload(key: key, size: size, partSize: partSize, urls: urls, uploadId: uploadId)
    }

    public func finishDirectUpload(_ upload: DirectUpload, parts: [DirectPart]) async throws {
        let fullKey = try objectKey(upload.key)
        let sorted = parts.sorted { $0.number < $1.number }
        do {
            guard sorted.map(\.number) == Array(1...upload.urls.count) else {
                throw StorageError.refused("the upload of '\(upload.key)' reported parts \(sorted.map(\.number)) of \(upload.urls.count)")
            }
            for part in sorted where part.etag.lowercased() != part.md5.lowercased() {
                throw StorageError.refused("part \(part.number) of '\(upload.key)' arrived damaged: the bucket holds MD5 \(part.etag), the runner sent \(part.md5)")
            }
            if let uploadId = upload.uploadId {
                let document = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
                    + sorted.map { "<Part><PartNumber>\($0.number)</PartNumber><ETag>\"\(S3XMLElement.escape($0.etag))\"</ETag></Part>" }.joined()
                    + "</CompleteMultipartUpload>"
                let request = S3Request(method: "POST", key: fullKey, query: [("uploadId", uploadId)],
                                        headers: [("Content-Type", "application/xml")], body: .data(Data(document.utf8)))
                let response = try await client.send(request)
                if S3XMLElement.parse(response.body)?.name == "Error" {
                    throw client.failure(S3ErrorInfo(response), request: request, attempts: 1)
                }
            }
            try await verify(fullKey: fullKey, upload: upload, expectedETag: Self.expectedETag(sorted, multipart: upload.uploadId != nil))
        } catch {
            await abortDirectUpload(upload)
            throw error
        }
    }

    /// The ETag S3 gives an object stored from parts with these MD5s: the MD5 itself for a single PUT, else the MD5
    /// of the parts' binary MD5s followed by `-N`.
    static func expectedETag(_ parts: [DirectPart], multipart: Bool) -> String {
        guard multipart else { return parts.first?.md5.lowercased() ?? "" }
        var joined = Data()
        for part in parts { joined.append(contentsOf: hexBytes(part.md5)) }
        return SigV4.hex(Insecure.MD5.hash(data: joined)) + "-\(parts.count)"
    }

    private static func hexBytes(_ hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next(), let low = iterator.next() {
            func value(_ c: UInt8) -> UInt8 { c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x61 + 10 }
            bytes.append(value(high) << 4 | value(low))
        }
        return bytes
    }

    /// Checks the stored object's size and ETag (skipped where the bucket encrypts with KMS keys, whose ETags are
    /// not MD5s); a mismatch removes the object.
    private func verify(fullKey: String, upload: DirectUpload, expectedETag: String) async throws {
        let head = try await client.send(
            S3Request(method: "GET", key: fullKey, headers: [("Range", "bytes=0-0")]), accepting: ["InvalidRange", "NoSuchKey"])
        let code = head.isSuccess ? "" : S3ErrorInfo(head).code
        guard code != "NoSuchKey" else { throw StorageError.refused("'\(upload.key)' is not in the bucket after its upload") }
        let size = code == "InvalidRange" ? 0
            : head.headers["content-range"].flatMap { $0.split(separator: "/").last }.flatMap { Int64($0) }
            ?? head.headers["content-length"].flatMap(Int64.init) ?? -1
        let etag = (head.headers["etag"] ?? "").replacingOccurrences(of: "\"", with: "").lowercased()
        let kms = head.headers["x-amz-server-side-encryption"]?.hasPrefix("aws:kms") ?? false
        var problem: String?
        if size != upload.size {
            problem = "the bucket holds \(size) bytes of '\(upload.key)', the runner sent \(upload.size)"
        } else if !kms, !etag.isEmpty, etag != expectedETag {
            problem = "the bucket's checksum of '\(upload.key)' (ETag \(etag)) is not that of the bytes the runner read (\(expectedETag))"
        }
        if let problem {
            _ = try? await client.send(S3Request(method: "DELETE", key: fullKey), accepting: ["NoSuchKey"])
            throw StorageError.refused(problem + "; the object was removed")
        }
    }

    public func abortDirectUpload(_ upload: DirectUpload) async {
        guard let uploadId = upload.uploadId, let fullKey = try? objectKey(upload.key) else { return }
        let client = self.client
        // Detached, so that a cancelled transfer still gets its abort request through.
        await Task.detached {
            do {
                _ = try await client.send(S3Request(method: "DELETE", key: fullKey, query: [("uploadId", uploadId)]),
                                          accepting: ["NoSuchUpload"])
            } catch {
                client.logger.warning("s3: could not abort the multipart upload of '\(fullKey)': \(error)")
            }
        }.value
    }

    public func abortDirectUploads(under prefix: String) async throws {
        let fullPrefix = try objectPrefix(prefix)
        let response = try await client.send(S3Request(method: "GET", key: nil, query: [("uploads", ""), ("prefix", fullPrefix)]))
        for upload in S3XMLElement.parse(response.body)?.children("Upload") ?? [] {
            guard let key = upload.text(of: "Key"), let id = upload.text(of: "UploadId"), key.hasPrefix(fullPrefix) else { continue }
            _ = try await client.send(S3Request(method: "DELETE", key: key, query: [("uploadId", id)]), accepting: ["NoSuchUpload"])
        }
    }
}
