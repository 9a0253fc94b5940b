import DstackModel
import DstackRunners
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// This build's version, as `dstack --version` prints it and runs record it.
public let dstackVersion = "0.1.0"

extension Provenance {
    /// The provenance of a run submitted now from `root` with `command`: this user and machine, the git state of
    /// the project (one `git status` process; nil outside a work tree or without git) and this dstack's version.
    /// Any of `secrets` found in the command line is masked.
    static func collect(root: URL, command: [String], secrets: [String]) async -> Provenance {
        let masked = command.map { SecretMasker.mask($0, hiding: secrets) }
        return Provenance(user: currentUserName(), host: ProcessInfo.processInfo.hostName, git: await gitState(root),
                          command: masked, dstackVersion: DstackCore.dstackVersion)
    }

    /// The state of the git work tree holding `root`, or nil.
    static func gitState(_ root: URL) async -> GitState? {
        guard let result = try? await Subprocess.run(["git", "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"], in: root),
              result.status == 0 else { return nil }
        return GitState.parse(porcelainV2: result.output)
    }

    /// The login name of this process's user (`$USER` when the password database has no entry).
    static func currentUserName() -> String {
        if let entry = getpwuid(geteuid()), let name = entry.pointee.pw_name {
            return String(cString: name)
        }
        return ProcessInfo.processInfo.environment["USER"] ?? "uid \(geteuid())"
    }
}
