import Foundation
import Testing

/// File names come from anyone's commit: they are data, never a way to reach outside a runner's folders
/// (issue 16, point 3), through the real binary.
@Suite struct HostileInputTests {
    @Test func aFileNameHoldingANewlineIsRefusedAtSnapshotNamingTheFile() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo hi]\n")
        try box.write("data/evil\nname.txt", "x\n")
        try box.write("data/tab\tname.txt", "x\n")
        let result = try box.dstack("run", "a")
        #expect(result.status == 2, "\(result.output)")
        #expect(result.stderr == """
            error: file name 'data/evil\\nname.txt' holds a newline; file names travel to runners as lines of text, so dstack cannot send it: rename the file, or leave it out of the snapshot (.gitignore, or .dstackignore without git)
            error: file name 'data/tab\\tname.txt' holds a tab; file names travel to runners as lines of text, so dstack cannot send it: rename the file, or leave it out of the snapshot (.gitignore, or .dstackignore without git)

            """, "\(result.stderr)")
        // Left out of the snapshot, it is no longer a problem.
        try box.write(".dstackignore", "data/\n")
        let ignored = try box.dstack("run", "a")
        #expect(ignored.status == 0, "\(ignored.output)")
    }

    /// A committed file named `.. x`, once removed, made the tree script run `rm -rf "$b/.."`: the runner's
    /// whole `trees/` folder went.
    @Test func removingAFileNamedDotDotSpaceLeavesTheRunnersOtherTreesAlone() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: ['cat src/a.txt; ls -a']\n  - name: b\n    commands: ['cat src/a.txt; ls -a']\n")
        try box.write(".dstack/hosts.yaml", bed.inventory(tag: "dots"))
        try box.write("src/a.txt", "first\n")
        try box.write(".. x", "dots\n")
        let first = try box.dstack(["run", "a"], environment: bed.environment)
        #expect(first.status == 0, "\(first.output)")
        #expect(first.stdout.contains("a | .. x"), "\(first.output)")
        let trees = bed.directory.appendingPathComponent("work-dots-r1/trees")
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: trees.path))

        try FileManager.default.removeItem(at: box.project.appendingPathComponent(".. x"))
        try box.write("src/a.txt", "second\n")
        let second = try box.dstack(["run", "b"], environment: bed.environment)
        #expect(second.status == 0, "\(second.output)")
        #expect(second.stdout.contains("b | second"), "\(second.output)")
        #expect(!second.stdout.contains(".. x"), "\(second.output)")
        let after = Set((try? FileManager.default.contentsOfDirectory(atPath: trees.path)) ?? [])
        #expect(before.subtracting(["latest"]).isSubset(of: after), "the first tree is gone: before \(before), after \(after)")
    }
}

/// A local job runs anyone's commands: it does not inherit the coordinator's credentials (issue 16, point 9).
@Suite struct JobEnvironmentTests {
    @Test func aLocalJobDoesNotInheritTheCoordinatorsCredentials() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: a
                commands: ['env | sort']
              - name: b
                environment: {AWS_ACCESS_KEY_ID: given-on-purpose}
                commands: ['echo "id=$AWS_ACCESS_KEY_ID"']
            """)
        let secrets = ["AWS_ACCESS_KEY_ID": "AKIDSEKRIT1", "AWS_SECRET_ACCESS_KEY": "sekrit-2", "AWS_SESSION_TOKEN": "sekrit-3",
                       "DSTACK_SSH_PASSPHRASE": "sekrit-4", "UNRELATED_SETTING": "kept-5"]
        let result = try box.dstack(["run", "a"], environment: secrets)
        #expect(result.status == 0, "\(result.output)")
        for (name, value) in secrets where name != "UNRELATED_SETTING" {
            #expect(!result.output.contains(value), "\(name) reached the job")
        }
        #expect(result.stdout.contains("a | UNRELATED_SETTING=kept-5"), "\(result.output)")
        let named = try box.dstack(["run", "b"], environment: secrets)
        #expect(named.stdout.contains("b | id=given-on-purpose"), "\(named.output)")
    }
}

/// What a run carries stays out of logs others can read (issue 16, point 5).
@Suite struct PrivateLogsTests {
    @Test func aDetachedCoordinatorsLogIsReadableByItsOwnerOnly() throws {
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: a\n    commands: [echo hi]\n")
        let result = try box.dstack("run", "a", "-d")
        #expect(result.status == 0, "\(result.output)")
        let name = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let log = box.runnerDir.appendingPathComponent("coordinators/\(name).log")
        var info = stat()
        #expect(lstat(log.path, &info) == 0, "no log at \(log.path)")
        #expect(info.st_mode & 0o777 == 0o600, "the log's mode is \(String(info.st_mode & 0o777, radix: 8))")
        #expect(lstat(log.deletingLastPathComponent().path, &info) == 0 && info.st_mode & 0o777 == 0o700)
        // Let the background run finish before the sandbox goes.
        for _ in 0..<100 where try box.statusJSON(name).first?["status"] as? String == "running" { usleep(100_000) }
    }

    @Test func verboseOutputShowsNoEnvironmentOrVariableValue() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: a
                environment: {API_TOKEN: env-sekrit-41}
                commands: ['test -n "$API_TOKEN" && test -n "$SEED" && echo ran']
            """)
        try box.variables("variables:\n  a: {seed: var-sekrit-42}\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["-v", "run", "a"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("a | ran"), "\(result.output)")
        #expect(result.stderr.contains("exec "), "-v shows no remote command at all: \(result.stderr)")
        #expect(!result.output.contains("env-sekrit-41"), "an environment value is in the -v output")
        #expect(!result.output.contains("var-sekrit-42"), "a variable value is in the -v output")
    }
}
