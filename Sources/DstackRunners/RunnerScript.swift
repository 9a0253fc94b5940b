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
    /// The agent's functions for a Slurm runner (submit, poll, stop, probe), sent before the agent's text.
    case slurm
    /// The batch script of a job on a Slurm runner: the wrapper, in the foreground.
    case slurmBatch = "slurm-batch"

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
        case .slurm: bytes = PackageResources.slurm_sh
        case .slurmBatch: bytes = PackageResources.slurm_batch_sh
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
