import Foundation

/// How a runner says that the folder of artifacts it hands to `withArtifacts`'s body is its own temporary copy.
///
/// The SSH runner fetches artifacts into a staging folder that it deletes as soon as the body returns; storing
/// them may then move files out of that folder into storage (a rename on the same file system) instead of writing
/// every byte a second time. A local runner hands over the job's own folder and sets nothing, so its files are
/// always copied. The value is bound for the duration of the body only (a task-local), and storage uses it only
/// when it names exactly the folder being stored.
public enum ArtifactStaging {
    /// The folder whose files may be consumed by storing them; nil when files must be left in place.
    @TaskLocal public static var disposableFolder: URL?

    /// Whether `folder` is the disposable folder of the current task.
    public static func isDisposable(_ folder: URL) -> Bool {
        guard let disposable = disposableFolder else { return false }
        return disposable.standardizedFileURL.path == folder.standardizedFileURL.path
    }
}
