import Foundation
import Testing

/// What a job sees and does: variables, environment, working directory, failures, artifacts.
@Suite struct JobTests {
    static let hostile = "it's \"quoted\" $(touch /tmp/dstack-pwned-sub) `touch /tmp/dstack-pwned-tick` ; touch /tmp/dstack-pwned-semi * \\ $HOME\nsecond line"

    @Test func hostileVariableValuesReachTheJobByteForByte() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        for f in ["/tmp/dstack-pwned-sub", "/tmp/dstack-pwned-tick", "/tmp/dstack-pwned-semi"] { unlink(f) }
        try box.workflows("""
        workflows:
          - name: q
            commands:
              - mkdir -p out
              - printf '%s' ${{ value }} > out/bare.txt
              - printf '%s' "${{ value }}" > out/double.txt
              - printf '%s' '${{ value }}' > out/single.txt
              - printf '%s' "$VALUE" > out/env.txt
            artifacts: [out]
        """)
        try box.variables("variables:\n  q:\n    value: plain\n")
        let result = try box.dstack(["run", "q", "--value", Self.hostile])
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun()
        let out = box.root.appendingPathComponent("dl")
        #expect(try box.dstack("artifacts", "download", run, "-o", out.path).status == 0)
        for name in ["bare", "double", "single", "env"] {
            let data = try Data(contentsOf: out.appendingPathComponent("out/\(name).txt"))
            #expect(String(decoding: data, as: UTF8.self) == Self.hostile, "\(name)")
        }
        for f in ["/tmp/dstack-pwned-sub", "/tmp/dstack-pwned-tick", "/tmp/dstack-pwned-semi"] {
            #expect(!FileManager.default.fileExists(atPath: f), "\(f) was created: a value ran as code")
        }
    }

    @Test func environmentWorkingDirAndBuiltinsAreHonoured() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: env
            working_dir: src/app
            environment:
              GREETING: hello ${{ who }}
            commands:
              - pwd | sed 's|.*/repo/||'
              - echo "greeting=$GREETING batch=$BATCH_SIZE who=$WHO"
              - echo "run=${{ run_name }} job=${{ job_id }} envrun=$DSTACK_RUN_NAME"
              - cat local.txt
        """)
        try box.variables("""
        variables:
          global:
            batch-size: 32
          env:
            who: world
        """)
        try box.write("src/app/local.txt", "in the working dir\n")
        let result = try box.dstack("run", "env", "--batch-size", "64")
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun()
        #expect(result.stdout.contains("env | src/app\n"))
        #expect(result.stdout.contains("env | greeting=hello world batch=64 who=world\n"))
        #expect(result.stdout.contains("env | run=\(run) job=\(run)-env envrun=\(run)\n"))
        #expect(result.stdout.contains("env | in the working dir\n"))
    }

    @Test func aFailingJobFailsTheRunAndSkipsEverythingDownstream() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: a
            commands:
              - echo "step one"
              - echo "boom" >&2; exit 3
              - echo "never printed"
          - name: b
            depends-on: [a]
            commands: [echo b]
          - name: c
            depends-on: [b]
            commands: [echo c]
        """)
        let result = try box.dstack("run", "c")
        #expect(result.status == 1)
        #expect(result.stderr.contains("error: job 'a' failed on local: exit code 3"))
        #expect(result.stderr.contains("  | boom"))
        #expect(!result.stdout.contains("never printed"))
        let jobs = try box.jobs(try box.lastRun())
        #expect(jobs["a"]?["status"] as? String == "failed")
        #expect(jobs["a"]?["exit_code"] as? Int == 3)
        #expect(jobs["b"]?["status"] as? String == "skipped")
        #expect(jobs["c"]?["status"] as? String == "skipped")
        #expect(try box.statusJSON().first?["status"] as? String == "failed")
        let logs = try box.dstack("logs", try box.lastRun(), "a")
        #expect(logs.stdout == "step one\nboom\n")
    }

    @Test func artifactsKeepModesAndInsideLinksButRefuseLinksThatEscape() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: good
            commands:
              - mkdir -p out/sub
              - printf '#!/bin/sh\\necho hi\\n' > out/run.sh && chmod 750 out/run.sh
              - echo data > out/sub/file.txt && chmod 640 out/sub/file.txt
              - ln -s sub/file.txt out/link.txt
            artifacts: [out]
          - name: bad
            commands:
              - mkdir -p out
              - ln -s /etc/passwd out/passwd
            artifacts: [out]
        """)
        #expect(try box.dstack("run", "good").status == 0)
        let out = box.root.appendingPathComponent("dl")
        #expect(try box.dstack("artifacts", "download", try box.lastRun(), "-o", out.path).status == 0)
        let attrs = try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("out/run.sh").path)
        #expect((attrs[.posixPermissions] as? Int) == 0o750)
        let attrs2 = try FileManager.default.attributesOfItem(atPath: out.appendingPathComponent("out/sub/file.txt").path)
        #expect((attrs2[.posixPermissions] as? Int) == 0o640)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: out.appendingPathComponent("out/link.txt").path) == "sub/file.txt")

        let bad = try box.dstack("run", "bad")
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("symbolic link 'out/passwd' -> '/etc/passwd' that points outside it"))
        #expect(try box.jobs(try box.lastRun())["bad"]?["status"] as? String == "failed")
    }

    @Test func aMissingArtifactFailsTheJob() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: a
            commands: ["true"]
            artifacts: [model]
        """)
        let result = try box.dstack("run", "a")
        #expect(result.status == 1)
        #expect(result.stderr.contains("artifact 'model' was not produced"))
    }

    @Test func dependencyArtifactsArePlacedAtTheirPaths() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: make
            commands: [mkdir -p data/deep, echo 42 > data/deep/answer.txt]
            artifacts: [data]
          - name: use
            depends-on: [make]
            commands: [cat data/deep/answer.txt]
        """)
        let result = try box.dstack("run", "use")
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("use  | 42"))
    }

    @Test(arguments: [(nil as Int?, true), (1, false)])
    func independentJobsRunAtTheSameTime(maxJobs: Int?, overlap: Bool) throws {
        let box = try Sandbox("parallel\(maxJobs ?? 0)")
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: x
            commands: ["date +%s.%N > /dev/null; echo start $(date +%s%N); sleep 1; echo end $(date +%s%N)"]
          - name: y
            commands: ["echo start $(date +%s%N); sleep 1; echo end $(date +%s%N)"]
          - name: all
            depends-on: [x, y]
            commands: ["true"]
        """)
        let args = ["run", "all", "--max-jobs", String(maxJobs ?? 2)]
        let result = try box.dstack(args)
        #expect(result.status == 0, "\(result.output)")
        func times(_ job: String) -> (Double, Double)? {
            let lines = result.stdout.split(separator: "\n").filter { $0.hasPrefix("\(job)   | ") }
            let numbers = lines.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
            return numbers.count == 2 ? (numbers[0], numbers[1]) : nil
        }
        let x = try #require(times("x")), y = try #require(times("y"))
        let overlapped = x.0 < y.1 && y.0 < x.1
        #expect(overlapped == overlap, "x=\(x) y=\(y)")
    }
}
