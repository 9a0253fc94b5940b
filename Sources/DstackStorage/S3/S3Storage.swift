import DstackModel
import Foundation
import Logging

/// `Storage` in an S3 bucket, on AWS or any S3-compatible server, at `s3://bucket/prefix`.
///
/// Every write is one PUT or one completed multipart upload, so readers see the old object or the whole new one.
/// `create` is a conditional PUT (`If-None-Match: *`) after a read; `append` rewrites the whole object, guarded by
/// `If-Match` so that concurrent appenders retry instead of losing lines (see `append`).
public final class S3Storage: Storage {
    /// The storage URL as the user wrote it.
    public let location: String
    let client: S3Client

    /// Opens the storage at `url` (`s3://bucket/prefix`), taking credentials and region from `environment` and the
    /// AWS files under `homeDirectory`, and the endpoint from `endpoint`, else `$AWS_ENDPOINT_URL`.
    public convenience init(
        url: String,
        endpoint: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        homeDirectory: URL = FileManager.default.homeDirectoryForCurrentUser,
        logger: Logger = Logger(label: "dstack.storage.s3")
    ) throws {
        try self.init(
            url: url, endpoint: endpoint, environment: environment, homeDirectory: homeDirectory, logger: logger,
            tuning: S3Tuning(), transport: nil)
    }

    /// Opens the storage with explicit tuning and transport (tests).
    init(
        url: String, endpoint: String?, environment: [String: String], homeDirectory: URL, logger: Logger,
        tuning: S3Tuning, transport: (any S3Transport)?
    ) throws {
        location = url
        let configuration = try S3Configuration(
            url: url, endpoint: endpoint, environment: environment, homeDirectory: homeDirectory)
        client = S3Client(configuration: configuration, tuning: tuning, logger: logger, transport: transport)
    }

    /// Reads a whole object with one GET; nil when the key does not exist.
    public func read(_ key: String) async throws -> Data? {
        let response = try await client.send(S3Request(method: "GET", key: objectKey(key)), accepting: ["NoSuchKey"])
        return response.isSuccess ? response.body : nil
    }

    /// Replaces an object with one PUT, which S3 applies atomically.
    public func write(_ key: String, data: Data) async throws {
        _ = try await client.send(S3Request(method: "PUT", key: objectKey(key), body: .data(data)))
    }

    /// Writes only if absent: a read first, then a PUT with `If-None-Match: *` so that the server settles races.
    ///
    /// AWS S3, MinIO and moto refuse the PUT with 412 when the object appeared in between. A server that ignores
    /// the header leaves a short race between the read and the PUT (both writers may win); one that answers
    /// 501 NotImplemented gets a plain PUT after the read, with the same race.
    public func create(_ key: String, data: Data) async throws -> Bool {
        let fullKey = try objectKey(key)
        for _ in 0..<client.tuning.maxAttempts {
            if try await exists(fullKey) { return false }
            let response = try await client.send(
                S3Request(method: "PUT", key: fullKey, headers: [("If-None-Match", "*")], body: .data(data)),
                accepting: ["PreconditionFailed", "ConditionalRequestConflict", "NotImplemented"])
            if response.isSuccess { return true }
            switch S3ErrorInfo(response).code {
            case "PreconditionFailed":
                return false
            case "NotImplemented":
                try await write(key, data: data)
                return true
            default:
                continue  // ConditionalRequestConflict: another conditional write was in flight; look again.
            }
        }
        throw client.unusable("create \(client.describe(fullKey)) kept conflicting with other writers; try again")
    }

    /// Appends by rewriting the whole object, since S3 has no append (logs are modest, so this stays cheap).
    ///
    /// The rewrite is conditional on the ETag that was read (`If-Match`, or `If-None-Match: *` for a new object),
    /// so two appenders never silently drop each other's bytes on servers that honour conditional writes (AWS
    /// S3, MinIO, moto): the loser reads again and retries. On a server that ignores them, the last writer wins.
    public func append(_ key: String, data: Data) async throws {
        let fullKey = try objectKey(key)
        let conflicts: Set<String> = ["PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "NotImplemented"]
        for _ in 0..<8 {
            let current = try await client.send(S3Request(method: "GET", key: fullKey), accepting: ["NoSuchKey"])
            let condition: (name: String, value: String)
            if current.isSuccess, let etag = current.headers["etag"] {
                condition = ("If-Match", etag)
            } else {
                condition = ("If-None-Match", "*")
            }
            let base = current.isSuccess ? current.body : Data()
            let response = try await client.send(
                S3Request(method: "PUT", key: fullKey, headers: [condition], body: .data(base + data)),
                accepting: conflicts)
            if response.isSuccess { return }
            if S3ErrorInfo(response).code == "NotImplemented" {
                _ = try await client.send(S3Request(method: "PUT", key: fullKey, body: .data(base + data)))
                return
            }
        }
        throw client.unusable("append to \(client.describe(fullKey)) kept losing races with other writers; try again")
    }

    /// Uploads a file: one PUT up to the part size (8 MiB), else a multipart upload that is aborted on failure.
    public func upload(from file: URL, to key: String) async throws {
        let fullKey = try objectKey(key)
        let size: Int64
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
            size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        } catch {
            throw StorageError.refused("cannot read '\(file.path)' to upload it: \(error.localizedDescription)")
        }
        if size <= Int64(client.tuning.minimumPartSize) {
            let body: S3Body = size == 0 ? .data(Data()) : .file(file, offset: 0, length: size)
            _ = try await client.send(S3Request(method: "PUT", key: fullKey, body: body))
            TransferObserver.current?.moved(size)
        } else {
            try await uploadMultipart(file: file, size: size, fullKey: fullKey)
        }
    }

    /// Downloads straight to a temporary file, checks its length, then renames it over `file`.
    public func download(_ key: String, to file: URL) async throws {
        let fullKey = try objectKey(key)
        let response = try await client.send(
            S3Request(method: "GET", key: fullKey, toFile: true), accepting: ["NoSuchKey"])
        guard response.isSuccess else { throw StorageError.notFound(key: key) }
        guard let temporary = response.file else {
            throw client.unusable("GET \(client.describe(fullKey)) returned no file")
        }
        defer { try? FileManager.default.removeItem(at: temporary) }
        // A Content-Encoding would have been undone by the HTTP stack, changing the length.
        if response.headers["content-encoding"] == nil,
            let expected = response.headers["content-length"].flatMap(Int64.init)
        {
            let got = ((try? FileManager.default.attributesOfItem(atPath: temporary.path))?[.size] as? NSNumber)?
                .int64Value
            if got != expected {
                throw client.unusable(
                    "GET \(client.describe(fullKey)) was cut short (\(got ?? 0) of \(expected) bytes); try again")
            }
        }
        try Self.moveAtomically(temporary, to: file)
    }

    /// Lists with ListObjectsV2, following continuation tokens past 1,000 keys.
    public func list(prefix: String) async throws -> [StorageObject] {
        let fullPrefix = try objectPrefix(prefix)
        var objects: [StorageObject] = []
        try await listPages(prefix: fullPrefix, delimiter: nil) { page in
            for entry in page.children("Contents") {
                guard let key = entry.text(of: "Key"), key.hasPrefix(client.configuration.keyPrefix) else { continue }
                let size = entry.text(of: "Size").flatMap(Int64.init) ?? 0
                objects.append(StorageObject(key: String(key.dropFirst(client.configuration.keyPrefix.count)), size: size))
            }
        }
        return objects.sorted { $0.key < $1.key }
    }

    /// Lists the common prefixes under `prefix` with the delimiter `/`, following continuation tokens.
    public func listChildren(prefix: String) async throws -> [String] {
        var fullPrefix = try objectPrefix(prefix)
        if !fullPrefix.isEmpty, !fullPrefix.hasSuffix("/") { fullPrefix += "/" }
        var names: Set<String> = []
        try await listPages(prefix: fullPrefix, delimiter: "/") { page in
            for common in page.children("CommonPrefixes") {
                guard let child = common.text(of: "Prefix"), child.hasPrefix(fullPrefix) else { continue }
                let name = child.dropFirst(fullPrefix.count).dropLast(child.hasSuffix("/") ? 1 : 0)
                if !name.isEmpty { names.insert(String(name)) }
            }
        }
        return names.sorted()
    }

    /// Deletes one object with one DELETE; an absent key is not an error.
    public func delete(_ key: String) async throws {
        _ = try await client.send(S3Request(method: "DELETE", key: objectKey(key)), accepting: ["NoSuchKey"])
    }

    /// Lists the keys under `prefix`, then deletes them with DeleteObjects, 1,000 at a time.
    public func deleteAll(prefix: String) async throws {
        let keys = try await list(prefix: prefix).map { client.configuration.keyPrefix + $0.key }
        var start = 0
        while start < keys.count {
            let batch = Array(keys[start..<min(start + 1000, keys.count)])
            try await deleteObjects(batch)
            start += batch.count
        }
    }
}

extension S3HTTPResponse {
    /// Whether the status is 2xx.
    var isSuccess: Bool { (200..<300).contains(status) }
}
