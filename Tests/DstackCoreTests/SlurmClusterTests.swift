import DstackRunners
import Testing

/// What `dstack runners` and job placement read from a Slurm login node's `sinfo` and `squeue`.
@Suite struct SlurmClusterTests {
    @Test("GPU counts and types are read from sinfo's GRES column", arguments: [
        ("gpu:tesla:2", 2, "tesla"), ("gpu:4", 4, nil), ("gpu:a100:4(S:0-1)", 4, "a100"),
        ("gpu:a100:2,gpu:v100:1", 3, "a100"), ("tmpdisk:100,gpu:h100:8(S:0)", 8, "h100"), ("(null)", 0, nil),
    ] as [(String, Int, String?)])
    func gres(text: String, count: Int, type: String?) {
        let found = SlurmCluster.gpus(text)
        #expect(found.count == count)
        #expect(found.type == type)
    }

    @Test("nodes are listed once however many partitions hold them; down and drained nodes are not usable")
    func nodes() {
        let cluster = SlurmCluster(facts: [
            ("node", "n1 idle 64 512000 gpu:a100:4(S:0-1) gpu"),
            ("node", "n1 idle 64 512000 gpu:a100:4(S:0-1) all"),
            ("node", "n2 mixed 32 256000 (null) cpu"),
            ("node", "n3 down* 64 512000 gpu:a100:8 gpu"),
            ("node", "n4 drained 64 512000 gpu:a100:8 gpu"),
            ("partition", "gpu up 3 2-00:00:00"),
            ("queued", "41 PENDING Priority dstack-run-1-train"),
            ("disk_free_kb", "100"),
        ])
        #expect(cluster.nodes.map(\.name) == ["n1", "n2", "n3", "n4"])
        #expect(cluster.nodes.map(\.isUsable) == [true, true, false, false])
        #expect(cluster.nodes[0].gpuCount == 4 && cluster.nodes[0].gpuType == "a100" && cluster.nodes[0].memoryMB == 512000)
        #expect(cluster.partitions.first?.timeLimit == "2-00:00:00")
        #expect(cluster.queued == ["41 PENDING Priority dstack-run-1-train"])
    }
}
