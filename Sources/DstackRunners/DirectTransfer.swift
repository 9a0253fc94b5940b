import Foundation

/// A runner that can move artifact bytes to and from a bucket by itself, given presigned URLs and nothing else
/// (docs/transfers.md): the coordinator keeps the credentials and the records, the runner moves the bytes.
public protocol DirectTransferRunner: Runner {
    /// Where the runner sees the storage directory (`storage_path:`), if it does.
    var sharedStoragePath: String? { get }

    /// Whether the runner can move bytes itself (it has `curl`, `wget` or `python3`, and `md5sum`/`sha256sum`),
    /// and whether the presigned GET `probeURL` answers from there (for a path: whether that file is there).
    func directReach(_ probeURL: String) async throws -> DirectReach

    /// Like `withArtifacts`, but the plain files of more than `minimum` bytes stay on the runner: `body` gets a
    /// local folder with everything else and the list of those files (their paths relative to the repository).
    func withSplitArtifacts<T: Sendable>(jobId: String, paths: [String], minimum: Int64,
                                         _ body: (URL, [RunnerFile]) async throws -> T) async throws -> T

    /// Uploads files of the job's repository by their part URLs (parts in parallel, each retried); reports what
    /// each part's bytes hashed to and what the bucket answered. `progress` gets byte counts as parts land.
    func putDirect(jobId: String, _ files: [DirectPut], progress: @escaping @Sendable (Int64) -> Void) async throws -> [DirectPutResult]

    /// Downloads files into the folder of dependencies that the job's start places in its repository, each checked
    /// for size (and SHA-256 when known) before it appears.
    func getDirect(jobId: String, _ files: [DirectGet], progress: @escaping @Sendable (Int64) -> Void) async throws
}

/// What a runner's transfer probe found.
public enum DirectReach: Sendable, Equatable {
    /// It reached the bucket with this tool (`curl`, `wget`, `python3`).
    case reachable(tool: String)
    /// It cannot: why, in words.
    case unreachable(String)
}

/// A plain file left on a runner.
public struct RunnerFile: Sendable, Hashable {
    /// Its path relative to the job's repository.
    public var path: String
    /// Its size in bytes.
    public var size: Int64
    /// Its permission bits.
    public var mode: UInt32

    /// Creates a file description.
    public init(path: String, size: Int64, mode: UInt32) {
        self.path = path
        self.size = size
        self.mode = mode
    }
}

/// One file a runner uploads itself.
public struct DirectPut: Sendable, Hashable {
    /// Its path relative to the job's repository.
    public var path: String
    /// Its size, which every part but the last divides.
    public var size: Int64
    /// The size of every part but the last.
    public var partSize: Int64
    /// The presigned PUT URL of each part, in order.
    public var urls: [String]

    /// Creates an upload order.
    public init(path: String, size: Int64, partSize: Int64, urls: [String]) {
        self.path = path
        self.size = size
        self.partSize = partSize
        self.urls = urls
    }
}

/// What a runner reports of one file it uploaded.
public struct DirectPutResult: Sendable, Hashable {
    /// Its path relative to the job's repository.
    public var path: String
    /// The hex SHA-256 of the whole file.
    public var sha256: String
    /// Per part (from 1): the hex MD5 of the bytes sent, and the ETag the bucket answered.
    public var parts: [Part]

    /// One stored part.
    public struct Part: Sendable, Hashable {
        /// The part number, from 1.
        public var number: Int
        /// The hex MD5 of its bytes.
        public var md5: String
        /// The bucket's ETag for it, quotes removed.
        public var etag: String
    }
}

/// One file a runner downloads itself.
public struct DirectGet: Sendable, Hashable {
    /// Its path relative to the job's repository.
    public var path: String
    /// Its size in bytes.
    public var size: Int64
    /// Its permission bits.
    public var mode: UInt32
    /// Its hex SHA-256, when the manifest has one.
    public var sha256: String?
    /// The presigned GET URL.
    public var url: String

    /// Creates a download order.
    public init(path: String, size: Int64, mode: UInt32, sha256: String?, url: String) {
        self.path = path
        self.size = size
        self.mode = mode
        self.sha256 = sha256
        self.url = url
    }
}
