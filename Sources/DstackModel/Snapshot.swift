/// One file of a code snapshot.
public struct SnapshotFile: Sendable, Hashable, Codable {
    /// Its path relative to the repository root.
    public var path: String
    /// The sha256 of its content, hex.
    public var hash: String
    /// Its permission bits.
    public var mode: UInt32
    /// Its size in bytes.
    public var size: Int64

    /// Creates an entry.
    public init(path: String, hash: String, mode: UInt32, size: Int64) {
        self.path = path
        self.hash = hash
        self.mode = mode
        self.size = size
    }
}

/// The code a run uses: the files git would commit (or the directory minus `.dstackignore`), each hashed.
public struct Snapshot: Sendable, Hashable, Codable {
    /// The repository root the paths are relative to.
    public var root: String
    /// The files, sorted by path.
    public var files: [SnapshotFile]
    /// The hash of the manifest of paths, modes and hashes: equal snapshots have equal ids.
    public var id: String

    /// Creates a snapshot; `id` is computed by the caller from `files`.
    public init(root: String, files: [SnapshotFile], id: String) {
        self.root = root
        self.files = files
        self.id = id
    }
}
