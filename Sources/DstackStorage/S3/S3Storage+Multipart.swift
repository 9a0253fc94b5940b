import DstackModel
import Foundation

extension S3Storage {
    /// The part size for a file: the minimum, grown (in whole MiB) until the file fits in 10,000 parts.
    static func partSize(forFileSize size: Int64, tuning: S3Tuning) -> Int {
        let mib: Int64 = 1024 * 1024
        let needed = (size + 9_999) / 10_000
        let rounded = (needed + mib - 1) / mib * mib
        return Int(max(Int64(tuning.minimumPartSize), rounded))
    }

    /// Uploads a large file in parts, a few at a time, each a range of the file that is read (in 1 MiB chunks) to
    /// hash it and again as it is sent.
    ///
    /// No part is ever whole in memory: a part in flight holds a chunk or two. Any failure, and
    /// cancellation, aborts the upload so that the bucket keeps no orphan parts.
    func uploadMultipart(file: URL, size: Int64, fullKey: String) async throws {
        let tuning = client.tuning
        let partSize = Self.partSize(forFileSize: size, tuning: tuning)
        let partCount = Int((size + Int64(partSize) - 1) / Int64(partSize))
        // Bigger parts (files past 80 GB) mean fewer at once: a limit from when each part was read into memory, kept
        // so that a huge file does not hold several 64+ MiB requests open on the server at once.
        let inFlight = max(1, min(tuning.partsInFlight, tuning.maximumPartSize / partSize))

        // Each part carries its CRC-32, as aws s3 cp's do. Without a declared algorithm, servers may compute a
        // full-object checksum at completion instead: moto copies and checksums the whole object then (1.4 s of
        // its CPU for 1 GiB, in a single thread, after the last part).
        // A server that does not know checksums (older S3-compatible ones) refuses the header: start again without.
        let refusals: Set<String> = ["NotImplemented", "InvalidArgument", "InvalidRequest"]
        var started = try await client.send(
            S3Request(method: "POST", key: fullKey, query: [("uploads", "")], headers: [("x-amz-checksum-algorithm", "CRC32")]),
            accepting: refusals)
        var checksums = true
        if !(200..<300).contains(started.status) {
            client.logger.debug("s3: the server refused a CRC-32 checksum (\(S3ErrorInfo(started).code)); uploading without")
            checksums = false
            started = try await client.send(S3Request(method: "POST", key: fullKey, query: [("uploads", "")]))
        }
        guard let uploadId = S3XMLElement.parse(started.body)?.text(of: "UploadId"), !uploadId.isEmpty else {
            throw client.unusable("starting a multipart upload of \(client.describe(fullKey)) returned no upload id")
        }
        client.logger.debug(
            "s3: uploading '\(fullKey)' in \(partCount) parts of \(partSize) bytes, \(min(inFlight, partCount)) at a time")

        do {
            let upload = { @Sendable [checksums] (number: Int) async throws -> StoredPart in
                try await self.uploadPart(number, of: file, partSize: partSize, size: size, fullKey: fullKey, uploadId: uploadId,
                                          checksum: checksums)
            }
            // Results are a class, not a tuple: Swift 6.3.1's release builds miscompile task groups of
            // non-trivial values (see Workspace.probePool).
            let parts = try await withThrowingTaskGroup(of: StoredPart.self) { group in
                var next = 1
                var parts: [Int: StoredPart] = [:]
                while next <= min(inFlight, partCount) {
                    group.addTask { [next] in try await upload(next) }
                    next += 1
                }
                while let part = try await group.next() {
                    parts[part.number] = part
                    if next <= partCount {
                        group.addTask { [next] in try await upload(next) }
                        next += 1
                    }
                }
                return parts
            }
            try await complete(fullKey: fullKey, uploadId: uploadId, parts: parts)
        } catch {
            // Detached, so that a cancelled upload still gets its abort request through.
            let client = self.client
            await Task.detached {
                do {
                    _ = try await client.send(
                        S3Request(method: "DELETE", key: fullKey, query: [("uploadId", uploadId)]),
                        accepting: ["NoSuchUpload"])
                } catch {
                    client.logger.warning("s3: could not abort the multipart upload of '\(fullKey)': \(error)")
                }
            }.value
            throw error
        }
    }

    private func uploadPart(
        _ number: Int, of file: URL, partSize: Int, size: Int64, fullKey: String, uploadId: String, checksum withChecksum: Bool
    ) async throws -> StoredPart {
        try await client.tuning.beforePart?(number)
        let offset = Int64(number - 1) * Int64(partSize)
        let length = min(Int64(partSize), size - offset)
        // One read of the range for both the signature's hash and the checksum; the body is read again as it goes.
        let digests = try SigV4.digests(file: file, offset: offset, length: length)
        let checksum = digests.crc32.base64
        let response = try await client.send(
            S3Request(
                method: "PUT", key: fullKey, query: [("partNumber", "\(number)"), ("uploadId", uploadId)],
                headers: withChecksum ? [("x-amz-checksum-crc32", checksum)] : [], body: .file(file, offset: offset, length: length),
                payloadHash: digests.sha256))
        guard let etag = response.headers["etag"] else {
            throw client.unusable("part \(number) of \(client.describe(fullKey)) was stored without an ETag")
        }
        TransferObserver.current?.moved(length)
        return StoredPart(number: number, etag: etag, checksum: withChecksum ? checksum : nil)
    }

    private func complete(fullKey: String, uploadId: String, parts: [Int: StoredPart]) async throws {
        let parts = parts.keys.sorted().map { parts[$0]! }.map {
            "<Part><PartNumber>\($0.number)</PartNumber><ETag>\(S3XMLElement.escape($0.etag))</ETag>"
                + ($0.checksum.map { "<ChecksumCRC32>\($0)</ChecksumCRC32>" } ?? "") + "</Part>"
        }.joined()
        let document = "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\(parts)</CompleteMultipartUpload>"
        let request = S3Request(
            method: "POST", key: fullKey, query: [("uploadId", uploadId)],
            headers: [("Content-Type", "application/xml")], body: .data(Data(document.utf8)))
        let response = try await client.send(request)
        // S3 may answer 200 and still report a failure in the body.
        if S3XMLElement.parse(response.body)?.name == "Error" {
            throw client.failure(S3ErrorInfo(response), request: request, attempts: 1)
        }
    }

    /// The keys of the multipart uploads in progress under a bucket prefix (to check that none are left behind).
    func multipartUploads(underFullPrefix prefix: String) async throws -> [String] {
        let response = try await client.send(
            S3Request(method: "GET", key: nil, query: [("uploads", ""), ("prefix", prefix)]))
        let listing = S3XMLElement.parse(response.body)
        return listing?.children("Upload").compactMap { $0.text(of: "Key") } ?? []
    }
}

/// A part stored by a multipart upload, as the completing request names it.
final class StoredPart: Sendable {
    let number: Int
    let etag: String
    /// The part's CRC-32 in base64, when the upload carries checksums.
    let checksum: String?

    init(number: Int, etag: String, checksum: String?) {
        self.number = number
        self.etag = etag
        self.checksum = checksum
    }
}
