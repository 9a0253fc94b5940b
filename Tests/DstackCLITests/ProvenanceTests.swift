import DstackModel
import Foundation
import Testing

/// Every run says who submitted it, from which code, with which command; `logs --since` shows recent output.
@Suite struct ProvenanceTests {
    @Test func aRunRecordsWhoFromWhichCommitAndWithWhichCommand() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: train\n    commands: [\"echo $EPOCHS\"]\n")
        try box.variables("variables:\n  train:\n    epochs: 1\n")
        try box.write("train.py", "print(1)\n")
        try box.write("notes.md", "old\n")
        try box.git("init", "-q", "-b", "main")
        try box.git("add", ".")
        try box.git("commit", "-q", "-m", "first")
        let commit = try Sandbox.run(["git", "rev-parse", "HEAD"], in: box.project).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try box.write("train.py", "print(2)\n")
        try box.write("new file.txt", "new\n")

        let result = try box.dstack("run", "train", "--epochs", "3")
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun()
        let json = try #require(try box.statusJSON(run).first)
        let user = try Sandbox.run(["id", "-un"], in: box.root).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(json["submitted_by"] as? String == "\(user)@\(ProcessInfo.processInfo.hostName)")
        let git = try #require(json["git"] as? [String: Any])
        #expect(git["commit"] as? String == commit)
        #expect(git["branch"] as? String == "main")
        #expect(git["dirty"] as? Bool == true)
        #expect(git["changed_files"] as? [String] == ["new file.txt", "train.py"])
        #expect(json["command"] as? [String] == [Sandbox.binary, "run", "train", "--epochs", "3"])
        #expect(json["dstack_version"] as? String == "0.1.0")
        #expect(try box.dstack("--version").stdout == "0.1.0\n")

        let status = try box.dstack("status", run)
        #expect(status.status == 0)
        let lines = status.stdout.split(separator: "\n").map(String.init).suffix(4)
        #expect(Array(lines) == [
            "submitted by  \(user)@\(ProcessInfo.processInfo.hostName)",
            "git           \(commit.prefix(12)) on main, with uncommitted changes to 2 files: new file.txt, train.py",
            "command       \(Sandbox.binary) run train --epochs 3",
            "dstack        0.1.0",
        ])

        // A clean tree on a detached head.
        try box.git("add", ".")
        try box.git("commit", "-q", "-m", "second")
        try box.git("checkout", "-q", "--detach")
        #expect(try box.dstack("run", "train").status == 0)
        let clean = try #require(try box.statusJSON(try box.lastRun()).first?["git"] as? [String: Any])
        #expect(clean["dirty"] as? Bool == false)
        #expect(clean["branch"] is NSNull)
        #expect(clean["changed_files"] as? [String] == [])
        #expect(try box.dstack("status", try box.lastRun()).stdout.contains(" on a detached head, clean\n"))
    }

    @Test func outsideGitTheGitKeyIsNullAndEveryOtherKeyIsThere() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        // A folder above the sandbox may be a git work tree; a ceiling keeps git from finding it.
        try box.workflows("workflows:\n  - name: w\n    commands: [\"true\"]\n")
        let env = ["GIT_CEILING_DIRECTORIES": box.root.path]
        #expect(try box.dstack(["run", "w"], environment: env).status == 0)
        let json = try #require(try box.statusJSON(environment: env).first)
        #expect(json["git"] is NSNull)
        for key in ["submitted_by", "command", "dstack_version"] { #expect(json[key] != nil && !(json[key] is NSNull), "\(key)") }
        #expect(try box.dstack(["status", try box.lastRun(env)], environment: env).stdout.contains("git           not a git repository\n"))
    }

    /// A secret's value typed on the command line (as a variable, which is not how secrets are given) is masked in
    /// the recorded command.
    @Test func aSecretValueOnTheCommandLineIsMaskedInTheRecord() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: w\n    commands: [\"true\"]\n")
        try box.variables("variables:\n  w:\n    note: x\n")
        let env = ["DSTACK_SECRETS_FILE": box.root.appendingPathComponent("secrets").path, "GIT_CEILING_DIRECTORIES": box.root.path]
        #expect(try Sandbox.run(["sh", "-c", "echo tok-typed-by-mistake | \"$0\" secrets add SOME_TOKEN", Sandbox.binary],
                                in: box.project, environment: box.environment.merging(env) { $1 }).status == 0)
        #expect(try box.dstack(["run", "w", "--note", "tok-typed-by-mistake"], environment: env).status == 0)
        let json = try #require(try box.statusJSON(environment: env).first)
        #expect(json["command"] as? [String] == [Sandbox.binary, "run", "w", "--note", "***"])
    }

    @Test func logsSinceShowsOnlyWhatArrivedLately() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: w\n    commands: [\"echo early\", \"sleep 0.3\", \"echo late\"]\n")
        #expect(try box.dstack("run", "w").status == 0)
        let run = try box.lastRun()
        let folder = box.storage.appendingPathComponent("project/runs/\(run)")
        let marks = folder.appendingPathComponent("jobs/w/log.times")
        // A short job writes no marks: its attempt's start stands for the first.
        #expect(!FileManager.default.fileExists(atPath: marks.path))
        #expect(try box.dstack("logs", run, "--since", "10m").stdout == "early\nlate\n")
        #expect(try box.dstack("logs", run, "--since", "0s").stdout == "")
        // As if the job had started, and printed 'early', two hours ago, and 'late' a moment ago.
        let now = Date()
        for record in [folder.appendingPathComponent("run.json"), folder.appendingPathComponent("jobs/w/job.json")] {
            var text = try String(contentsOf: record, encoding: .utf8)
            let started = try #require(text.firstRange(of: /"started_at" : "[^"]*"/))
            text = text.replacingOccurrences(of: String(text[started]), with: "\"started_at\" : \"\(formatTimestamp(now.addingTimeInterval(-7200)))\"")
            try Data(text.utf8).write(to: record)
        }
        try Data("6 \(formatTimestamp(now.addingTimeInterval(-1)))\n".utf8).write(to: marks)
        #expect(try box.dstack("logs", run, "--since", "10m").stdout == "late\n")
        #expect(try box.dstack("logs", run, "w", "--since", "3h").stdout == "early\nlate\n")
        #expect(try box.dstack("logs", run, "--since", formatTimestamp(now.addingTimeInterval(-60))).stdout == "late\n")
        // Output that arrived within a few seconds after a mark older than the cutoff is shown.
        try Data("6 \(formatTimestamp(now.addingTimeInterval(-602)))\n".utf8).write(to: marks)
        #expect(try box.dstack("logs", run, "--since", "10m").stdout == "late\n")
        try Data("6 \(formatTimestamp(now.addingTimeInterval(-700)))\n".utf8).write(to: marks)
        #expect(try box.dstack("logs", run, "--since", "10m").stdout == "")
        let bad = try box.dstack("logs", run, "--since", "lately")
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("Error: --since takes a duration like 90s, 10m, 2h or 1d, or an ISO 8601 time, not 'lately'"), "\(bad.stderr)")
    }
}
