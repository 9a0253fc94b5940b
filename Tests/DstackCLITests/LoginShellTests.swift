import Foundation
import Testing

/// Runner accounts as labs have them: a login shell that is not bash (tcsh on many HPC clusters, fish), and a
/// `.bashrc` that sets up `PATH` and variables (conda, pyenv). Every command dstack sends is one line any shell
/// parses, and the agent shell started through the login shell hands its environment to every job.
@Suite struct LoginShellTests {
    @Test func theExamplesPipelineRunsOnTcshAndFishAccounts() throws {
        let bed = try SSHBed(2, loginShells: [0: "/usr/bin/tcsh", 1: "/usr/bin/fish"])
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try FileManager.default.removeItem(at: box.project)
        try FileManager.default.copyItem(at: Sandbox.repositoryRoot.appendingPathComponent("examples"), to: box.project)
        try box.write(".dstack/hosts.yaml", bed.inventory())

        let runners = try box.dstack(["runners", "--json"], environment: bed.environment)
        #expect(runners.status == 0, "\(runners.output)")
        #expect(runners.stdout.components(separatedBy: "\"reachable\" : true").count == 3, "\(runners.output)")
        // Both runners take part: the three jobs' slots are one per runner.
        let result = try box.dstack(["run", "evaluate", "--no-cache"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("evaluate | mse "), "\(result.output)")
        #expect(!result.output.contains("Unmatched"), "tcsh parsed a script: \(result.output)")
        let jobs = try box.jobs(try box.lastRun())
        #expect(jobs.values.allSatisfy { $0["status"] as? String == "done" }, "\(jobs)")

        // Each account ran jobs: a workflow per runner, pinned by label.
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [tcsh]", 1: "labels: [fish]"]))
        try FileManager.default.removeItem(at: box.project.appendingPathComponent(".dstack/variables.yaml"))
        try box.workflows("""
        workflows:
          - name: on-tcsh
            commands: ['echo "shell=$SHELL user=$(id -un)"']
            labels: [tcsh]
          - name: on-fish
            commands: ['echo "shell=$SHELL user=$(id -un)"']
            labels: [fish]
          - name: both
            depends-on: [on-tcsh, on-fish]
            commands: ['true']
        """)
        let pinned = try box.dstack(["run", "both"], environment: bed.environment)
        #expect(pinned.status == 0, "\(pinned.output)")
        #expect(pinned.stdout.contains("user=dstack-tcsh"), "\(pinned.output)")
        #expect(pinned.stdout.contains("user=dstack-fish"), "\(pinned.output)")
    }

    @Test func jobsSeeWhatTheLoginShellsBashrcSetsUpOnTheFirstJobAndTheHundredth() throws {
        let bashrc = """
        # What a conda or pyenv init does: a folder first on PATH, an exported variable.
        export PATH="$HOME/tools:$PATH"
        export DSTACK_TEST_FROM_BASHRC=set-by-bashrc
        """
        let bed = try SSHBed(1, bashrc: [0: bashrc])
        defer { bed.stop() }
        let tools = bed.directory.appendingPathComponent("runner-1/home/tools")
        try FileManager.default.createDirectory(at: tools, withIntermediateDirectories: true)
        let tool = tools.appendingPathComponent("labtool")
        try Data("#!/bin/sh\necho labtool-ran\n".utf8).write(to: tool)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tool.path)
        let box = try Sandbox()
        defer { box.cleanup() }
        var text = "workflows:\n"
        for i in 1...100 {
            text += "  - name: j\(i)\n    commands: ['labtool', 'echo \"mark=$DSTACK_TEST_FROM_BASHRC\"']\n"
        }
        text += "  - name: all\n    depends-on: [\((1...100).map { "j\($0)" }.joined(separator: ", "))]\n    commands: ['true']\n"
        try box.workflows(text)
        try box.write(".dstack/hosts.yaml", bed.inventory(maxJobs: 4))
        let result = try box.dstack(["run", "all"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        let run = try box.lastRun()
        for job in ["j1", "j100"] {
            let log = try box.dstack("logs", run, job).stdout
            #expect(log == "labtool-ran\nmark=set-by-bashrc\n", "\(job): \(log)")
        }
    }
}
