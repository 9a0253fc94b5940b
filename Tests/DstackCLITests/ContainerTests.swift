import DstackModel
import Foundation
import Testing

@testable import DstackRunners

/// `image:` jobs. No container engine runs on these machines, so the exact engine command line is pinned, and the
/// path is run end to end with a STAND-IN engine: a script named `docker` on one test runner's PATH that records
/// its arguments and runs the job's commands on the host.
@Suite struct ContainerTests {
    @Test func theEngineCommandLineMountsTheJobPassesEnvironmentByNameAndHeldGPUs() throws {
        let job = JobLaunch(jobId: "brave-owl-1-train", commands: ["python train.py"],
                            environment: ["EPOCHS": "20", "WANDB_MODE": "offline"], workingDir: "src",
                            image: "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime", gpus: [0, 2])
        #expect(JobCommand.container(engine: "docker", job: job) == """
        printf '%s %s\\n' docker dstack-brave-owl-1-train > "$1/container"
        exec docker run --rm --name dstack-brave-owl-1-train -v "$1/repo:/workspace" -v "$1/commands.sh:/dstack/commands.sh:ro" -w /workspace/src --user "$(id -u):$(id -g)" -e EPOCHS -e WANDB_MODE --gpus '"device=0,2"' pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime /bin/sh -e /dstack/commands.sh

        """)
        var plain = job
        plain.gpus = []
        plain.workingDir = ""
        plain.image = "alpine:3; rm -rf /"
        let line = JobCommand.container(engine: "podman", job: plain)
        #expect(line.contains("exec podman run --rm"))
        #expect(line.contains(" -w /workspace "))
        #expect(!line.contains("--gpus"))
        #expect(line.contains(" 'alpine:3; rm -rf /' /bin/sh -e"), "the image is one quoted word")
        #expect(throws: RunnerError.self) { try JobCommand.script(for: plain, engine: nil) }
        #expect(try JobCommand.script(for: JobLaunch(jobId: "x", commands: ["true"], environment: [:], workingDir: ""), engine: nil) == nil)
    }

    static let standIn = #"""
    #!/bin/sh
    # STAND-IN container engine for tests: records its arguments, runs the job's commands on the host.
    log="$(dirname "$0")/calls"
    printf '%s\n' "$*" >> "$log"
    case "$1" in
      version) echo "stand-in 0"; exit 0 ;;
      run) shift ;;
      *) exit 0 ;;
    esac
    repo="" workdir="/workspace" commands=""
    while [ $# -gt 0 ]; do
      case "$1" in
        --rm) shift ;;
        --name|--user|--gpus|-e) shift 2 ;;
        -v) case "$2" in
              *:/workspace) repo=${2%:/workspace} ;;
              *:/dstack/commands.sh:ro) commands=${2%:/dstack/commands.sh:ro} ;;
            esac
            shift 2 ;;
        -w) workdir=$2; shift 2 ;;
        *) break ;;
      esac
    done
    cd "$repo${workdir#/workspace}" && exec /bin/sh -e "$commands"
    """#

    @Test func anImageJobRunsThroughTheStandInEngineOnTheRunnerThatHasOne() throws {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-standin-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: bin) }
        try Data(Self.standIn.utf8).write(to: bin.appendingPathComponent("docker"))
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent("docker").path)
        // Runner 2 has the stand-in engine first on its PATH; runner 1 has no engine.
        let bed = try SSHBed(2, extraEnvironment: [1: "PATH=\(bin.path):/usr/local/bin:/usr/bin:/bin"])
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
        workflows:
          - name: boxed
            image: alpine:3
            working_dir: sub
            environment: {GREETING: hello}
            commands:
              - echo "$GREETING from $(pwd | sed 's|.*/repo|repo|')" > result.txt
              - cat result.txt
            artifacts: [sub/result.txt]
        """)
        try box.write("sub/.keep", "")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["run", "boxed"], environment: bed.environment)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("boxed | hello from repo/sub"))
        let run = try box.lastRun()
        #expect(try box.jobs(run)["boxed"]?["runner"] as? String == "r2", "only r2 has an engine")
        let calls = try String(contentsOf: bin.appendingPathComponent("calls"), encoding: .utf8)
        let runCall = try #require(calls.split(separator: "\n").first { $0.hasPrefix("run ") })
        #expect(runCall.hasPrefix("run --rm --name dstack-\(run)-boxed -v "))
        #expect(runCall.contains("/jobs/\(run)-boxed/repo:/workspace -v "))
        #expect(runCall.contains(" -w /workspace/sub --user 0:0 -e DSTACK_JOB_ID -e DSTACK_RUN_NAME -e DSTACK_WORKFLOW -e GREETING alpine:3 /bin/sh -e /dstack/commands.sh"))
        #expect(try box.dstack("artifacts", "list", run).stdout.contains("sub/result.txt"))
    }

    @Test func anImageJobWithNoEngineAnywhereIsAConfigurationError() throws {
        let bed = try SSHBed(1)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("workflows:\n  - name: boxed\n    image: alpine:3\n    commands: [\"true\"]\n")
        try box.write(".dstack/hosts.yaml", bed.inventory())
        let result = try box.dstack(["run", "boxed"], environment: bed.environment)
        #expect(result.status == 2, "\(result.output)")
        #expect(result.stderr.contains("needs a container engine (docker or podman) for its image"))
    }
}
