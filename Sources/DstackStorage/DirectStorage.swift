import Foundation

/// A storage whose artifact bytes a runner may move itself, with nothing but what the coordinator hands it: URLs
/// signed for one object each (a bucket), never a credential.
///
/// The coordinator stays the only writer of records: a runner only ever writes the artifact files named by the URLs
/// it was given, and the coordinator checks each one (`finishDirectUpload`) before it writes a manifest naming it.
public protocol DirectStorage: Sendable {
    /// Why this storage cannot hand out URLs (temporary credentials, whose token every URL would carry), or nil.
    var directRefusal: String? { get }

    /// A URL that reads the object at `key` (a presigned GET), valid for `lifetime`.
    func directDownloadURL(_ key: String, lifetime: Duration) throws -> String

    /// Prepares the upload of a file of `size` bytes to `key`: one URL for a single PUT, or a multipart upload's
    /// part URLs (every part `partSize` bytes but the last).
    func beginDirectUpload(_ key: String, size: Int64, lifetime: Duration) async throws -> DirectUpload

    /// Completes an upload whose parts the runner stored, after checking with the bucket that the object holds
    /// exactly the bytes the runner hashed (`partMD5s`, hex, one per part, and the ETags the bucket answered);
    /// on any mismatch the upload is aborted (or the object removed) and a `StorageError` says why.
    func finishDirectUpload(_ upload: DirectUpload, parts: [DirectPart]) async throws

    /// Abandons an upload (its stored parts are dropped).
    func abortDirectUpload(_ upload: DirectUpload) async

    /// Abandons every unfinished upload under `prefix` (left by a coordinator that died during a transfer).
    func abortDirectUploads(under prefix: String) async throws
}

/// One upload a runner performs: where each part goes.
public struct DirectUpload: Sendable, Hashable {
    /// The storage key (relative to the storage root).
    public var key: String
    /// The file's size in bytes.
    public var size: Int64
    /// The size of every part but the last (the whole size for a single PUT).
    public var partSize: Int64
    /// One presigned PUT URL per part, in order.
    public var urls: [String]
    /// The multipart upload's id; nil for a single PUT.
    public var uploadId: String?

    /// Creates an upload description.
    public init(key: String, size: Int64, partSize: Int64, urls: [String], uploadId: String?) {
        self.key = key
        self.size = size
        self.partSize = partSize
        self.urls = urls
        self.uploadId = uploadId
    }
}

/// What a runner reports of one part it stored.
public struct DirectPart: Sendable, Hashable {
    /// The part number, from 1.
    public var number: Int
    /// The hex MD5 of the part's bytes, as the runner read them.
    public var md5: String
    /// The ETag the bucket answered, quotes removed.
    public var etag: String

    /// Creates a part report.
    public init(number: Int, md5: String, etag: String) {
        self.number = number
        self.md5 = md5
        self.etag = etag
    }
}
