import Foundation

extension S3Storage {
    /// The bucket key for a storage key, after checking that it is relative, `/`-separated and free of `.`/`..`.
    func objectKey(_ key: String) throws -> String {
        guard !key.isEmpty, !key.hasPrefix("/"), !key.hasSuffix("/"), Self.segmentsAreSafe(key) else {
            throw StorageError.invalidKey(key)
        }
        return client.configuration.keyPrefix + key
    }

    /// The bucket prefix for a storage prefix (which may be empty or end with `/`).
    func objectPrefix(_ prefix: String) throws -> String {
        let body = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
        guard !prefix.hasPrefix("/"), body.isEmpty || Self.segmentsAreSafe(body) else {
            throw StorageError.invalidKey(prefix)
        }
        return client.configuration.keyPrefix + prefix
    }

    private static func segmentsAreSafe(_ path: String) -> Bool {
        !path.contains("\0") && !path.split(separator: "/", omittingEmptySubsequences: false).contains {
            $0.isEmpty || $0 == "." || $0 == ".."
        }
    }

    /// Puts a downloaded temporary file at `destination` in one `rename`, so readers never see half of it.
    static func moveAtomically(_ temporary: URL, to destination: URL) throws {
        let manager = FileManager.default
        let directory = destination.deletingLastPathComponent()
        // The session's temporary file may be on another file system; rename(2) only works within one.
        let staging = directory.appendingPathComponent(".\(destination.lastPathComponent).dstack-\(UUID().uuidString)")
        do {
            try manager.createDirectory(at: directory, withIntermediateDirectories: true)
            do {
                try manager.moveItem(at: temporary, to: staging)
            } catch {
                try manager.copyItem(at: temporary, to: staging)
            }
            guard rename(staging.path, destination.path) == 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: destination.path])
            }
        } catch {
            try? manager.removeItem(at: staging)
            throw StorageError.refused("cannot write '\(destination.path)': \(error.localizedDescription)")
        }
    }
}
