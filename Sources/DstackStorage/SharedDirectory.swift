import Foundation

/// A storage directory that a runner sees too (a shared mount, the inventory's `storage_path:`): the runner copies
/// artifact files in and out of it itself, and the "URLs" it is handed are plain paths under `runnerRoot`.
///
/// The runner copies a file under a temporary name, hashes the copy and renames it into place; the coordinator then
/// checks the file's size here and that the copy hashed like the original, and writes the records (docs/transfers.md).
public struct SharedDirectory: DirectStorage {
    /// The storage as the coordinator sees it.
    public let storage: DirectoryStorage
    /// The same directory as the runner sees it (absolute).
    public let runnerRoot: String

    /// Pairs a directory storage with the path at which one runner sees it.
    public init(storage: DirectoryStorage, runnerRoot: String) {
        self.storage = storage
        self.runnerRoot = runnerRoot.hasSuffix("/") && runnerRoot.count > 1 ? String(runnerRoot.dropLast()) : runnerRoot
    }

    public var directRefusal: String? { nil }

    public func directDownloadURL(_ key: String, lifetime: Duration) throws -> String {
        _ = try storage.url(key)
        return runnerRoot + "/" + key
    }

    public func beginDirectUpload(_ key: String, size: Int64, lifetime: Duration) async throws -> DirectUpload {
        _ = try storage.url(key)
        return DirectUpload(key: key, size: size, partSize: max(size, 1), urls: [runnerRoot + "/" + key], uploadId: nil)
    }

    public func finishDirectUpload(_ upload: DirectUpload, parts: [DirectPart]) async throws {
        var problem: String?
        if parts.count != 1 {
            problem = "the copy of '\(upload.key)' reported \(parts.count) parts, not 1"
        } else if parts[0].etag.lowercased() != parts[0].md5.lowercased() {
            problem = "the copy of '\(upload.key)' in the storage (MD5 \(parts[0].etag)) differs from the runner's file (\(parts[0].md5))"
        } else {
            let size = try storage.fileSize(upload.key)
            if size != upload.size {
                problem = "the storage holds \(size.map(String.init) ?? "no file") for '\(upload.key)', the runner copied \(upload.size) bytes"
            }
        }
        if let problem {
            try? await storage.delete(upload.key)
            throw StorageError.refused(problem + "; the file was removed")
        }
    }

    public func abortDirectUpload(_ upload: DirectUpload) async {}

    public func abortDirectUploads(under prefix: String) async throws {}
}
