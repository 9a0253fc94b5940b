import DstackModel

/// A Slurm cluster as its login node's `sinfo` and `squeue` describe it (`dstack runners`).
public struct SlurmCluster: Sendable, Hashable, Codable {
    /// One node of the partition.
    public struct Node: Sendable, Hashable, Codable {
        /// Its name.
        public var name: String
        /// Its state (`idle`, `mixed`, `allocated`, `down`, `drained`...).
        public var state: String
        /// CPUs.
        public var cpus: Int
        /// Memory, in MiB.
        public var memoryMB: Int64
        /// Its generic resources as sinfo writes them (`gpu:a100:4`, `(null)`).
        public var gres: String
        /// GPUs, from `gres`.
        public var gpuCount: Int
        /// The GPU type, from `gres`, if it names one.
        public var gpuType: String?

        /// True when jobs can run there (not down, drained, failing or unknown).
        public var isUsable: Bool {
            let s = state.lowercased().trimmingCharacters(in: ["*", "~", "#", "!", "%", "$", "@", "^", "-", "+"])
            return ["idle", "mixed", "allocated", "completing", "alloc", "mix", "comp", "planned"].contains(s)
        }
    }

    /// One partition.
    public struct Partition: Sendable, Hashable, Codable {
        /// Its name (`*` marks the default).
        public var name: String
        /// `up` or `down`.
        public var availability: String
        /// Its node count.
        public var nodes: Int
        /// Its time limit, as sinfo writes it.
        public var timeLimit: String
    }

    /// The nodes of the runner's partition (of every partition without one).
    public var nodes: [Node] = []
    /// Every partition.
    public var partitions: [Partition] = []
    /// This user's jobs in the queue: `ID STATE REASON NAME`.
    public var queued: [String] = []

    /// Reads the agent's `slurm_probe` facts.
    public init(facts: [(key: String, value: String)]) {
        var seen = Set<String>()
        for (key, value) in facts {
            let words = value.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            switch key {
            case "node" where words.count >= 5:
                // sinfo -N lists a node once per partition.
                guard seen.insert(words[0]).inserted else { continue }
                let (count, type) = Self.gpus(words[4])
                nodes.append(Node(name: words[0], state: words[1], cpus: Int(words[2]) ?? 0,
                                  memoryMB: Int64(words[3]) ?? 0, gres: words[4], gpuCount: count, gpuType: type))
            case "partition" where words.count >= 4:
                partitions.append(Partition(name: words[0], availability: words[1], nodes: Int(words[2]) ?? 0, timeLimit: words[3]))
            case "queued":
                queued.append(value)
            default:
                break
            }
        }
    }

    /// The GPU count and type of a GRES list (`gpu:a100:4(S:0-1),tmpdisk:100`, `gpu:2`).
    public static func gpus(_ gres: String) -> (count: Int, type: String?) {
        var count = 0
        var type: String?
        for item in gres.split(separator: ",") {
            let plain = item.split(separator: "(").first.map(String.init) ?? String(item)
            let parts = plain.split(separator: ":").map(String.init)
            guard parts.first == "gpu", parts.count >= 2 else { continue }
            if let n = Int(parts[parts.count - 1]) {
                count += n
                if parts.count >= 3 { type = type ?? parts[1] }
            }
        }
        return (count, type)
    }
}
