import Foundation

/// One object in a storage listing.
public struct StorageObject: Sendable, Hashable {
    /// The object's key, relative to the storage root, `/`-separated.
    public var key: String
    /// Its size in bytes.
    public var size: Int64

    /// Creates a listing entry.
    public init(key: String, size: Int64) {
        self.key = key
        self.size = size
    }
}

/// A place where runs, logs, artifacts, cache entries and tags are kept: a directory or a bucket.
///
/// Keys are relative, `/`-separated paths (`proj/runs/grumpy-zebra-1/run.json`); they never start with `/` and
/// never hold `..`. Every write is atomic: a reader sees the old object or the whole new one, never a part.
/// The layout of runs and artifacts is not a backend's business; `RunStore` builds it on these primitives.
public protocol Storage: Sendable {
    /// Where this storage is, as the user wrote it (`/srv/dstack`, `s3://bucket/prefix`).
    var location: String { get }

    /// Reads a whole (small) object; nil when there is none.
    func read(_ key: String) async throws -> Data?

    /// Replaces an object atomically.
    func write(_ key: String, data: Data) async throws

    /// Writes an object only if none exists under `key`; returns false (and writes nothing) when one does.
    func create(_ key: String, data: Data) async throws -> Bool

    /// Adds bytes at the end of an object, creating it if needed (used for live logs).
    func append(_ key: String, data: Data) async throws

    /// Streams a local file into an object atomically, without holding it whole in memory.
    func upload(from file: URL, to key: String) async throws

    /// Streams an object into a local file (replaced atomically); throws `StorageError.notFound` when absent.
    func download(_ key: String, to file: URL) async throws

    /// Every object whose key starts with `prefix`, sorted by key.
    func list(prefix: String) async throws -> [StorageObject]

    /// The names of the immediate children "folders" under `prefix` (which ends with `/`), sorted.
    func listChildren(prefix: String) async throws -> [String]

    /// Removes one object; removing an absent one is not an error.
    func delete(_ key: String) async throws

    /// Removes every object under `prefix`.
    func deleteAll(prefix: String) async throws

    // Last, so that the requirements above keep their places for code built before it was added.
    /// Stores a local file under `key` like `upload(from:to:)`, for a caller that has no further use for the file:
    /// a backend may move it into place instead of copying it, so the file may be gone afterwards.
    func adopt(_ file: URL, as key: String) async throws
}

extension Storage {
    /// By default the file is copied, as `upload(from:to:)` does, and left where it was.
    public func adopt(_ file: URL, as key: String) async throws {
        try await upload(from: file, to: key)
    }
}

/// What went wrong in storage, in words a person can act on. `unusable` maps to exit status 3.
public enum StorageError: Error, Sendable, CustomStringConvertible {
    /// The object does not exist.
    case notFound(key: String)
    /// The storage cannot be used at all (unreachable, read-only, no such bucket, bad credentials...).
    case unusable(location: String, reason: String)
    /// A key or path that would leave the storage root, or that is otherwise malformed.
    case invalidKey(String)
    /// Content refused for safety (a symlink that escapes an artifact, a path with `..`).
    case refused(String)

    public var description: String {
        switch self {
        case .notFound(let key): return "not found in storage: '\(key)'"
        case .unusable(let location, let reason): return "storage '\(location)' is unusable: \(reason)"
        case .invalidKey(let key): return "invalid storage key '\(key)'"
        case .refused(let why): return why
        }
    }
}
