import Foundation
import Testing

/// A real single-node Slurm cluster (scripts/testbed-slurm: munged, slurmctld, slurmd) behind an sshd login node
/// (runner 1 of an `SSHBed`, whose sessions get the cluster's SLURM_CONF), and as many plain SSH runners as asked.
final class SlurmBed: Sendable {
    let cluster: URL
    let ssh: SSHBed
    /// The name of the cluster's one node.
    let node: String

    init(sshRunners: Int = 0) throws {
        cluster = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-slurm-\(UUID().uuidString.prefix(8))")
        let start = try Sandbox.run(["bash", Self.script, "start", cluster.path], in: Sandbox.repositoryRoot)
        guard start.status == 0 else {
            _ = try? Sandbox.run(["bash", Self.script, "stop", cluster.path], in: Sandbox.repositoryRoot)
            throw BucketError("scripts/testbed-slurm failed: \(start.output)")
        }
        let env = (try? String(contentsOf: cluster.appendingPathComponent("slurm.env"), encoding: .utf8)) ?? ""
        node = env.split(separator: "\n").first { $0.hasPrefix("SLURM_NODE=") }.map { String($0.dropFirst(11)) } ?? ""
        do {
            ssh = try SSHBed(1 + sshRunners, extraEnvironment: [0: "SLURM_CONF=\(cluster.path)/slurm.conf"])
        } catch {
            _ = try? Sandbox.run(["bash", Self.script, "stop", cluster.path], in: Sandbox.repositoryRoot)
            throw error
        }
    }

    static var script: String { Sandbox.repositoryRoot.appendingPathComponent("scripts/testbed-slurm").path }

    /// A hosts inventory: runner `r1` is the cluster (kind slurm, its work directory on the "shared" filesystem,
    /// which here is this machine's; `time` its default limit in minutes), the others plain SSH runners; `extra` adds
    /// fields to a runner by index.
    func inventory(extra: [Int: String] = [:], maxJobs: Int? = nil, time: String = "10") -> String {
        var more = extra
        more[0] = "kind: slurm\npartition: debug\ntime: \"\(time)\"\n" + (extra[0] ?? "")
        return ssh.inventory(extra: more, maxJobs: maxJobs)
    }

    /// Runs a Slurm client command (`scontrol`, `scancel`, `squeue`) against the cluster.
    @discardableResult
    func slurm(_ arguments: String...) throws -> Sandbox.Result {
        var env = ProcessInfo.processInfo.environment
        env["SLURM_CONF"] = cluster.path + "/slurm.conf"
        return try Sandbox.run(arguments, in: cluster, environment: env)
    }

    /// `scontrol show job ID` as KEY → VALUE (values as Slurm prints them; `Comment` up to the end of its line).
    func job(_ id: String) throws -> [String: String] {
        let shown = try slurm("scontrol", "show", "job", id)
        var out: [String: String] = [:]
        for line in shown.stdout.split(separator: "\n") {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.hasPrefix("Comment=") {
                out["Comment"] = String(trimmed.dropFirst(8))
                continue
            }
            for field in trimmed.split(separator: " ") {
                let kv = field.split(separator: "=", maxSplits: 1)
                if kv.count == 2 { out[String(kv[0])] = String(kv[1]) }
            }
        }
        return out
    }

    var environment: [String: String] { ssh.environment }

    func stop() {
        ssh.stop()
        _ = try? Sandbox.run(["bash", Self.script, "stop", cluster.path], in: Sandbox.repositoryRoot)
        try? FileManager.default.removeItem(at: cluster)
    }
}
