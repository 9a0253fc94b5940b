import Foundation
import Testing

/// The examples/ pipeline and the cache, end to end through the real binary on the local runner.
@Suite struct PipelineTests {
    @Test func examplePipelineRunsThenCachesThenRerunsOnlyWhatChanged() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)

        let first = try box.dstack("run", "evaluate")
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("train    | epoch 1 loss"))
        #expect(first.stdout.contains("evaluate | mse "))
        #expect(first.stderr.contains("[prepare] started on local"))
        let run1 = try box.lastRun()
        let artifacts = try box.dstack("artifacts", "list", run1, "--json")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(artifacts.stdout.utf8)) as? [[String: Any]])
        let paths = Set(entries.compactMap { $0["path"] as? String })
        #expect(paths == ["data/train.csv", "data/test.csv", "model/weights.txt", "metrics/report.txt"])
        #expect(entries.allSatisfy { ($0["job"] as? String) != nil && ($0["size"] as? Int ?? 0) > 0 })

        // Unchanged: every job is reused and nothing executes.
        let second = try box.dstack("run", "evaluate")
        #expect(second.status == 0, "\(second.output)")
        #expect(!second.stdout.contains(" | "), "a cached run printed job output: \(second.stdout)")
        let run2 = try box.lastRun()
        #expect(try box.jobs(run2).values.allSatisfy { $0["status"] as? String == "cached" })

        // One variable of train changed: prepare stays cached, train and evaluate run again.
        let third = try box.dstack("run", "evaluate", "--epochs", "40")
        #expect(third.status == 0, "\(third.output)")
        let jobs3 = try box.jobs(try box.lastRun())
        #expect(jobs3["prepare"]?["status"] as? String == "cached")
        #expect(jobs3["train"]?["status"] as? String == "done")
        #expect(jobs3["evaluate"]?["status"] as? String == "done")
        #expect(third.stdout.contains("epoch 40 loss"))

        // --no-cache runs everything.
        let fourth = try box.dstack("run", "evaluate", "--no-cache")
        #expect(fourth.status == 0)
        #expect(try box.jobs(try box.lastRun()).values.allSatisfy { $0["status"] as? String == "done" })

        // Downloaded artifacts are the files the job wrote.
        let out = box.root.appendingPathComponent("download")
        let download = try box.dstack("artifacts", "download", run1, "-o", out.path)
        #expect(download.status == 0, "\(download.output)")
        let report = try String(contentsOf: out.appendingPathComponent("metrics/report.txt"), encoding: .utf8)
        #expect(report.contains("test rows 80"))
    }

    @Test func changingOneSourceFileRerunsTheJobsWhoseKeyChanged() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: a
            commands: [cat src/a.txt]
          - name: b
            depends-on: [a]
            commands: [cat src/b.txt]
        """)
        try box.write("src/a.txt", "one\n")
        try box.write("src/b.txt", "two\n")
        try box.git("init", "-q")
        try box.git("add", ".")
        try box.git("commit", "-qm", "init")
        #expect(try box.dstack("run", "b").status == 0)
        #expect(try box.dstack("run", "b").status == 0)
        #expect(try box.jobs(try box.lastRun()).values.allSatisfy { $0["status"] as? String == "cached" })

        // An uncommitted edit is part of the snapshot.
        try box.write("src/b.txt", "three\n")
        let edited = try box.dstack("run", "b")
        #expect(edited.stdout.contains("b | three"))
        #expect(try box.jobs(try box.lastRun()).values.allSatisfy { $0["status"] as? String == "done" })
    }

    @Test func snapshotHoldsWhatGitWouldCommit() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: ls
            commands: [find . -type f -not -path './.git/*' | sort]
        """)
        try box.write(".gitignore", "ignored.txt\n")
        try box.write("tracked.txt", "t")
        try box.write("ignored.txt", "i")
        try box.git("init", "-q")
        try box.git("add", ".gitignore", "tracked.txt", ".dstack")
        try box.git("commit", "-qm", "init")
        try box.write("untracked.txt", "u")
        let result = try box.dstack("run", "ls")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("ls | ./tracked.txt"))
        #expect(result.stdout.contains("ls | ./untracked.txt"))
        #expect(!result.stdout.contains("ignored.txt\n") || !result.stdout.contains("ls | ./ignored.txt"))
        #expect(!result.stdout.contains("ls | ./ignored.txt"))
    }

    @Test func withoutGitTheDirectoryMinusDstackignoreIsTheSnapshot() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: ls
            commands: [find . -type f | sort]
        """)
        try box.write(".dstackignore", "# comment\n*.log\ncache/\n/top.txt\n")
        try box.write("keep.txt", "k")
        try box.write("debug.log", "x")
        try box.write("cache/big.bin", "x")
        try box.write("top.txt", "x")
        try box.write("sub/top.txt", "kept: the pattern is anchored")
        let result = try box.dstack("run", "ls")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("ls | ./keep.txt"))
        #expect(result.stdout.contains("ls | ./sub/top.txt"))
        #expect(!result.stdout.contains("debug.log"))
        #expect(!result.stdout.contains("cache/big.bin"))
        #expect(!result.stdout.contains("ls | ./top.txt"))
    }
}
