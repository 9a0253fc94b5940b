import DstackRunners
import Foundation

extension Workspace {
    /// Starts this dstack binary with `arguments` (an `attach` of run `name`) in a session of its own, so the run
    /// goes on after this process returns; its output goes to a private log under the local runner's directory.
    public func startDetachedCoordinator(_ name: String, arguments: [String]) throws {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let path = FileManager.default.fileExists(atPath: executable) ? executable : CommandLine.arguments[0]
        let logDir = localRunner.baseDirectory.appendingPathComponent("coordinators").path
        // Private: a detached coordinator's log holds its jobs' output.
        try FileManager.default.createDirectory(atPath: logDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        _ = try Subprocess.spawnDetached([path] + arguments, environment: ProcessInfo.processInfo.environment,
                                         stdout: "\(logDir)/\(name).log")
    }
}
