import DstackSSH
import Foundation

/// How a transfer into a local folder shows its progress when the bytes arrive through tools that do not count
/// them (a remote `tar` into a local one, `cat` into a file): the folder's plain files are summed every quarter
/// second, and the growth reported.
public enum FolderGrowth {
    /// Reports how much `folder` grew, every quarter second until cancelled.
    static func watch(_ folder: URL, _ report: @escaping @Sendable (Int64) -> Void) -> Task<Void, Never> {
        Growth.watch(report) { size(of: folder) }
    }

    /// The sum of the sizes of the plain files under `folder` (links are not followed).
    public static func size(of folder: URL) -> Int64 {
        guard let walk = FileManager.default.enumerator(at: folder, includingPropertiesForKeys: [.isRegularFileKey, .fileSizeKey]) else {
            return 0
        }
        var total: Int64 = 0
        for case let url as URL in walk {
            guard let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .fileSizeKey]), values.isRegularFile == true else { continue }
            total += Int64(values.fileSize ?? 0)
        }
        return total
    }
}
