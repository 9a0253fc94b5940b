import DstackModel
import Foundation

/// The shell scripts that run on runners: one `.sh` file each in `Scripts/` (so they can be read, linted and
/// tested by themselves; docs/agent.md describes them), compiled into the binary.
public enum RunnerScript: String, CaseIterable, Sendable {
    /// The agent shell: one per connection, carrying every request (start, poll, stop, locks, probe, cleanup).
    case agent
    /// The wrapper each job runs under, detached.
    case wrapper
    /// Builds a code tree by difference from the latest one.
    case treeBuild = "tree-build"
    /// Builds a runner's first code tree from a tar stream.
    case treeFromTar = "tree-from-tar"
    /// Publishes a built tree and reaps unused ones (appended to both tree builds).
    case treePublish = "tree-publish"
    /// Lists the objects a runner holds.
    case objectsList = "objects-list"
    /// Moves uploaded objects into place.
    case objectsAdopt = "objects-adopt"
    /// Says which artifact paths exist, and which are plain files.
    case artifactsInspect = "artifacts-inspect"
    /// Moves artifact bytes between the runner and a bucket through presigned URLs (docs/transfers.md).
    case transfer
    /// The agent's functions for a Slurm runner (submit, poll, stop, probe), sent before the agent's text.
    case slurm
    /// The batch script of a job on a Slurm runner: the wrapper, in the foreground.
    case slurmBatch = "slurm-batch"

    /// What is sent to start an agent: `agent.sh` with the text of `wrapper.sh` in `dstack_wrapper`, and the name of
    /// the file it is kept in (`wrapperFileName`), in front of it.
    public static let agentProgram: String = "dstack_wrapper=" + shellQuote(RunnerScript.wrapper.text)
        + " dstack_wrapper_name=" + wrapperFileName + "\n" + RunnerScript.agent.text

    /// The file a runner's work folder keeps the wrapper in: `wrapper-HASH.sh`, HASH from its text (FNV-1a, 64
    /// bits), so a job's wrapper is one file written once per work folder, never rewritten while a job reads it.
    public static let wrapperFileName: String = {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in RunnerScript.wrapper.text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return "wrapper-" + String(hash, radix: 16) + ".sh"
    }()

    /// The file's name in `Scripts/`.
    public var fileName: String { rawValue + ".sh" }

    /// The script's text (compiled in from `Scripts/`).
    public var text: String {
        let bytes: [UInt8]
        switch self {
        case .agent: bytes = PackageResources.agent_sh
        case .wrapper: bytes = PackageResources.wrapper_sh
        case .treeBuild: bytes = PackageResources.tree_build_sh
        case .treeFromTar: bytes = PackageResources.tree_from_tar_sh
        case .treePublish: bytes = PackageResources.tree_publish_sh
        case .objectsList: bytes = PackageResources.objects_list_sh
        case .objectsAdopt: bytes = PackageResources.objects_adopt_sh
        case .artifactsInspect: bytes = PackageResources.artifacts_inspect_sh
        case .transfer: bytes = PackageResources.transfer_sh
        case .slurm: bytes = PackageResources.slurm_sh
        case .slurmBatch: bytes = PackageResources.slurm_batch_sh
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
