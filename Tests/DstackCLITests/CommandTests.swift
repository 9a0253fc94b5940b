import Foundation
import Testing

/// The other commands, their output shapes and their exit statuses.
@Suite struct CommandTests {
    static let twoSteps = """
    workflows:
      - name: prepare
        commands:
          - mkdir -p data
          - echo "${{ size }}" > data/size.txt
        artifacts: [data]
      - name: train
        depends-on: [prepare]
        commands:
          - cat data/size.txt
      - name: evaluate
        depends-on: [prepare:best]
        commands:
          - cat data/size.txt
    """

    @Test func invalidConfigurationExits2WithLocationAndRunsNothing() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: a
            comands: [echo hi]
        """)
        let result = try box.dstack("run", "a")
        #expect(result.status == 2)
        #expect(result.stderr.contains(".dstack/workflows.yaml:3:5: error: unknown key 'comands' in a workflow (did you mean 'commands'?)"))
        #expect(result.stderr.contains("    comands: [echo hi]\n    ^"))
        #expect(try box.dstack("status", "--json").stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]" ||
                (try box.statusJSON()).isEmpty)
    }

    @Test func aCycleShowsItsPath() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: a
            depends-on: [b]
            commands: [echo a]
          - name: b
            depends-on: [a]
            commands: [echo b]
        """)
        let result = try box.dstack("dag", "a")
        #expect(result.status == 2)
        #expect(result.stderr.contains("error: dependency cycle: a -> b -> a"))
    }

    @Test func unknownVariableFlagIsAUsageError() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 10\n")
        let result = try box.dstack("run", "train", "--sise", "3")
        #expect(result.status == 64)
        #expect(result.stderr.contains("unknown variable --sise for workflow 'train' (did you mean 'size'?)"))
    }

    @Test func runHelpListsTheVariablesOfTheWorkflowAndItsDependencies() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  global:\n    seed: 7\n  prepare:\n    size: 10\n")
        let result = try box.dstack("run", "train", "--help")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("--size <value>"))
        #expect(result.stdout.contains("(default: 10)"))
        #expect(result.stdout.contains("--seed <value>"))
        #expect(result.stdout.contains("(default: 7)"))
    }

    @Test func tagDependenciesReuseTheTaggedRunAndAMissingTagExits2() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 10\n")
        let missing = try box.dstack("run", "evaluate")
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no stored results for 'prepare:best'"))

        #expect(try box.dstack("run", "prepare", "--size", "99").status == 0)
        let tagged = try box.lastRun()
        #expect(try box.dstack("tags", "add", "best", tagged).status == 0)
        let tags = try box.dstack("tags", "list")
        #expect(tags.stdout.contains("best") && tags.stdout.contains(tagged))

        let result = try box.dstack("run", "evaluate")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("evaluate | 99"))
        let jobs = try box.jobs(try box.lastRun())
        #expect(Set(jobs.keys) == ["evaluate"], "the tagged workflow must never rerun")

        let dag = try box.dstack("dag", "evaluate")
        #expect(dag.stdout.contains("prepare:best (run \(tagged))"))

        // A tagged run cannot be deleted until its tag is.
        let delete = try box.dstack("delete", tagged)
        #expect(delete.status == 64)
        #expect(delete.stderr.contains("is tagged 'best'"))
        #expect(try box.dstack("tags", "delete", "best").status == 0)
        #expect(try box.dstack("delete", tagged).status == 0)
        #expect(try box.dstack("status", tagged).status == 64)
    }

    @Test func runTagOptionTagsTheRunWhenDone() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 5\n")
        #expect(try box.dstack("run", "prepare", "-t", "best").status == 0)
        let evaluate = try box.dstack("run", "evaluate")
        #expect(evaluate.stdout.contains("evaluate | 5"))
    }

    @Test func dagFormatsMarkCachedJobs() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 1\n")
        #expect(try box.dstack("run", "prepare").status == 0)
        let text = try box.dstack("dag", "train")
        #expect(text.status == 0)
        #expect(text.stdout == "prepare  cached\ntrain    run     <- prepare\n2 jobs, 1 cached, 1 to run\n")
        let dot = try box.dstack("dag", "train", "--format", "dot")
        #expect(dot.stdout.contains("\"prepare\" [label=\"prepare\\n(cached)\", style=filled, fillcolor=lightgrey];"))
        #expect(dot.stdout.contains("\"prepare\" -> \"train\";"))
        let mermaid = try box.dstack("dag", "train", "--format", "mermaid")
        #expect(mermaid.stdout.contains("prepare[\"prepare (cached)\"]:::cached"))
        #expect(mermaid.stdout.contains("prepare --> train"))
    }

    @Test func statusJSONHasTheDocumentedShape() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 1\n")
        #expect(try box.dstack("run", "train").status == 0)
        #expect(try box.dstack("run", "train", "--size", "2").status == 0)
        let runs = try box.statusJSON()
        #expect(runs.count == 2)
        let newest = try #require(runs.first)
        for key in ["name", "workflow", "status", "submitted_at", "jobs"] { #expect(newest[key] != nil, "\(key)") }
        #expect(newest["status"] as? String == "done")
        let job = try #require((newest["jobs"] as? [[String: Any]])?.first)
        for key in ["id", "workflow", "status", "runner", "exit_code", "cache_key", "attempts"] {
            #expect(job.keys.contains(key), "\(key)")
        }
        #expect((runs[0]["submitted_at"] as! String) > (runs[1]["submitted_at"] as! String), "newest first")
        let name = try #require(newest["name"] as? String)
        #expect(name.split(separator: "-").count == 3 && Int(name.split(separator: "-")[2]) != nil, "adjective-animal-N: \(name)")
    }

    @Test func detachedRunPrintsOnlyItsNameAndStillFinishes() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: slow
            commands: [sleep 1, echo finished]
        """)
        let result = try box.dstack("run", "slow", "-d")
        #expect(result.status == 0, "\(result.output)")
        let name = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!name.isEmpty && !name.contains("\n") && !name.contains(" "), "stdout: \(result.stdout)")
        var status = ""
        for _ in 0..<100 {
            status = try box.statusJSON(name).first?["status"] as? String ?? ""
            if status == "done" { break }
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(status == "done")
        #expect(try box.dstack("logs", name).stdout == "finished\n")
    }

    @Test func stopStopsARunningRunAndKeepsWhatItWroteUnlessX() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: forever
            commands: [mkdir -p out, echo partial > out/p.txt, echo begun, sleep 300]
            artifacts: [out]
          - name: after
            depends-on: [forever]
            commands: [echo never]
        """)
        let name = try box.dstack("run", "after", "-d").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for _ in 0..<100 {
            if try box.dstack("logs", name, "forever").stdout.contains("begun") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        let started = Date()
        let stop = try box.dstack("stop", name)
        #expect(stop.status == 0, "\(stop.output)")
        #expect(Date().timeIntervalSince(started) < 15)
        #expect(stop.stdout.contains("run \(name) stopped"))
        let jobs = try box.jobs(name)
        #expect(jobs["forever"]?["status"] as? String == "stopped")
        #expect(jobs["after"]?["status"] as? String == "stopped")
        // What the stopped job wrote is kept with the run, but never as a cache hit.
        #expect(try box.dstack("artifacts", "list", name).stdout.contains("out/p.txt"))
        #expect(try box.dstack("dag", "after").stdout.contains("forever  run"))

        let aborted = try box.dstack("run", "after", "-d").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        for _ in 0..<100 {
            if try box.dstack("logs", aborted, "forever").stdout.contains("begun") { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(try box.dstack("stop", aborted, "-x").status == 0)
        #expect(!(try box.dstack("artifacts", "list", aborted).stdout.contains("out/p.txt")))
    }

    @Test func pruneRemovesFinishedUntaggedRunsAndUnusedResults() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.variables("variables:\n  prepare:\n    size: 1\n")
        #expect(try box.dstack("run", "prepare").status == 0)
        let keep = try box.lastRun()
        #expect(try box.dstack("tags", "add", "best", keep).status == 0)
        #expect(try box.dstack("run", "prepare", "--size", "2").status == 0)
        let result = try box.dstack("prune")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("deleted 1 run and 1 stored result"))
        #expect(try box.statusJSON().compactMap { $0["name"] as? String } == [keep])
        #expect(try box.dstack("artifacts", "list", ":best").stdout.contains("data/size.txt"))
    }

    @Test func initWritesStarterFilesThatRun() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project.appendingPathComponent(".dstack"))
        let initResult = try box.dstack("init")
        #expect(initResult.status == 0)
        #expect(FileManager.default.fileExists(atPath: box.project.appendingPathComponent(".dstack/hosts.example.yaml").path))
        let result = try box.dstack("run", "train", "--epochs", "3")
        #expect(result.status == 0, "\(result.output)")
        let again = try box.dstack("init")
        #expect(again.stdout.contains("kept .dstack/workflows.yaml"))
    }

    @Test func noProjectIsAClearError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-noproj-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let result = try Sandbox.run([Sandbox.binary, "status"], in: dir)
        #expect(result.status == 2)
        #expect(result.stderr.contains("no .dstack/ directory"))
        #expect(result.stderr.contains("dstack init"))
    }

    @Test func unusableStorageExits3() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.twoSteps)
        try box.write("blocker", "a file where the storage directory should be")
        let result = try box.dstack(["status", "--storage", box.project.appendingPathComponent("blocker/storage").path])
        #expect(result.status == 3)
        #expect(result.stderr.contains("is unusable"))
    }
}
