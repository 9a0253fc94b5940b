import DstackModel
import Foundation
import Testing

/// Parses `text` as `hosts.yaml`, returning the whole rendered error ("" when it loads).
private func inventoryError(_ text: String) -> String {
    do {
        _ = try Inventory.parse(SourceFile(displayName: "hosts.yaml", text: text))
        return ""
    } catch {
        return error.description
    }
}

/// Resources and `slurm:` options become sbatch options: a pure mapping, pinned option by option.
@Suite("sbatch options")
struct SbatchOptionsTests {
    @Test("every resource maps to its sbatch option, in a fixed order")
    func fullMapping() {
        let request = SlurmRequest(
            resources: Resources(gpu: 2, gpuName: "a100", gpuMemory: 40 << 30, cpu: 8, memory: (16 << 30) + 1),
            maxDuration: 2 * 3600 + 30,
            options: SlurmWorkflowOptions(partition: "big", constraint: "ib&nvlink", extra: ["--exclusive", "--comment=a b"]))
        let settings = SlurmSettings(partition: "gpu", account: "lab", qos: "high", time: "1:00:00")
        #expect(SbatchOptions.arguments(for: request, settings: settings, jobName: "dstack-run-1-train") == [
            "--job-name=dstack-run-1-train", "--partition=big", "--account=lab", "--qos=high", "--time=02:01:00",
            "--gres=gpu:a100:2", "--cpus-per-task=8", "--mem=16385M", "--constraint=ib&nvlink", "--exclusive",
            "--comment=a b",
        ])
    }

    @Test("nothing asked: only the job name, the runner's partition and its default time")
    func defaults() {
        let request = SlurmRequest(resources: Resources())
        #expect(SbatchOptions.arguments(for: request, settings: SlurmSettings(), jobName: "j") == ["--job-name=j"])
        #expect(SbatchOptions.arguments(for: request, settings: SlurmSettings(partition: "p", time: "90"), jobName: "j")
                == ["--job-name=j", "--partition=p", "--time=90"])
        let gpus = SlurmRequest(resources: Resources(gpu: 1))
        #expect(SbatchOptions.arguments(for: gpus, settings: SlurmSettings(), jobName: "j") == ["--job-name=j", "--gres=gpu:1"])
    }

    @Test("max_duration becomes --time, rounded up to the minute", arguments: [
        (1.0, "1"), (60.0, "1"), (61.0, "2"), (3599.0, "01:00:00"), (3600.0, "01:00:00"),
        (5400.0, "01:30:00"), (86400.0, "1-00:00:00"), (90000.0 + 59, "1-01:01:00"),
    ])
    func time(seconds: Double, expected: String) {
        #expect(SbatchOptions.time(seconds: seconds) == expected)
    }

    @Test("Slurm time limits are checked", arguments: [
        ("90", nil), ("1:30", nil), ("1:30:00", nil), ("2-0", nil), ("2-12:00", nil), ("2-12:00:00", nil),
        ("UNLIMITED", nil), ("infinite", nil),
        ("0", "must be more than zero, got '0'"),
        ("2h", "must be a Slurm time limit like 90 (minutes), 1:30:00 or 2-0 (days-hours), got '2h'"),
        ("1:2:3:4", "must be a Slurm time limit like 90 (minutes), 1:30:00 or 2-0 (days-hours), got '1:2:3:4'"),
        ("1--2", "must be a Slurm time limit like 90 (minutes), 1:30:00 or 2-0 (days-hours), got '1--2'"),
    ] as [(String, String?)])
    func timeLimits(text: String, problem: String?) {
        #expect(SbatchOptions.timeProblem(text) == problem)
    }

    @Test("extra options are checked", arguments: [
        ("--exclusive", nil), ("--comment=$(rm -rf /); `x` 'q'", nil), ("--nodes=1", nil),
        ("-N 1", "'-N 1' is not a long sbatch option; write it as --name or --name=value (one item per option)"),
        ("--nodes 1", "'--nodes 1' is not a long sbatch option; write it as --name or --name=value (one item per option)"),
        ("--output=/tmp/x", "'--output' is set by dstack itself; remove it from 'extra'"),
        ("--wrap=true", "'--wrap' is set by dstack itself; remove it from 'extra'"),
        ("--partition=x", "write 'partition' under 'slurm:' rather than in 'extra'"),
        ("--gres=gpu:1", "'--gres' comes from the workflow's 'resources' and 'max_duration'; set them there"),
        ("--comment=a\nb", "'--comment' holds a line break; give each option as one line"),
    ] as [(String, String?)])
    func extra(option: String, problem: String?) {
        #expect(SbatchOptions.extraProblem(option) == problem)
    }
}

/// `kind: slurm` runners and workflows' `slurm:` in the files users write: values read, mistakes reported at
/// FILE:LINE:COL with the line and a caret.
@Suite("slurm in the inventory and workflows")
struct SlurmSchemaTests {
    @Test("a slurm runner's settings are read; an SSH runner has none")
    func settings() throws {
        let inventory = try Inventory.parse(SourceFile(displayName: "hosts.yaml", text: """
            runners:
              - name: hpc
                kind: slurm
                host: login
                partition: gpu
                account: lab
                qos: normal
                time: 90
                max_jobs: 20
                workdir: /shared/x
              - name: box
                kind: ssh
                host: b
              - name: other
                host: c

            """))
        #expect(inventory.runners[0].slurm == SlurmSettings(partition: "gpu", account: "lab", qos: "normal", time: "90"))
        #expect(inventory.runners[0].maxJobs?.value == 20)
        #expect(inventory.runners[1].slurm == nil)
        #expect(inventory.runners[2].slurm == nil)
        let resolved = inventory.resolve(sshConfig: nil, home: "/home/u", localUser: "u")
        #expect(resolved[0].slurm?.partition == "gpu")
        #expect(resolved[0].remoteWorkdir == "/shared/x")
        #expect(resolved[1].slurm == nil)
    }

    @Test("mistakes in a slurm runner are reported where they were written")
    func inventoryErrors() {
        #expect(inventoryError("""
            runners:
              - name: hpc
                kind: slrum
                host: login
              - name: box
                host: b
                partition: gpu
              - name: hpc2
                kind: slurm
                host: login2
                time: 2h
                account: "my lab"

            """) == """
            hosts.yaml:3:11: error: unknown runner kind 'slrum' (did you mean 'slurm'?); write 'ssh' (the default) or 'slurm'
                kind: slrum
                      ^
            hosts.yaml:7:16: error: 'partition' is for runners of kind 'slurm'; add 'kind: slurm' to this runner or remove 'partition'
                partition: gpu
                           ^
            hosts.yaml:11:11: error: 'time' must be a Slurm time limit like 90 (minutes), 1:30:00 or 2-0 (days-hours), got '2h'
                time: 2h
                      ^
            hosts.yaml:12:14: error: 'account' 'my lab' holds a space or a quote; Slurm names have neither
                account: "my lab"
                         ^
            """)
    }

    @Test("a workflow's slurm: options are read")
    func workflowOptions() throws {
        let project = try #require(loaded("""
            workflows:
              - name: train
                commands: [python train.py]
                slurm:
                  partition: big
                  constraint: a100
                  extra: [--exclusive, "--comment=x y"]

            """))
        #expect(project.workflows[0].slurm == SlurmWorkflowOptions(partition: "big", constraint: "a100",
                                                                   extra: ["--exclusive", "--comment=x y"]))
    }

    @Test("mistakes in a workflow's slurm: are reported where they were written")
    func workflowErrors() {
        #expect(diagnostics("""
            workflows:
              - name: train
                commands: [python train.py]
                slurm:
                  partion: big
                  extra: [-N 2, --output=x, --time=10]

            """) == """
            .dstack/workflows.yaml:5:7: error: unknown key 'partion' in 'slurm' (did you mean 'partition'?)
                  partion: big
                  ^
            .dstack/workflows.yaml:6:15: error: slurm extra option '-N 2' is not a long sbatch option; write it as --name or --name=value (one item per option)
                  extra: [-N 2, --output=x, --time=10]
                          ^
            .dstack/workflows.yaml:6:21: error: slurm extra option '--output' is set by dstack itself; remove it from 'extra'
                  extra: [-N 2, --output=x, --time=10]
                                ^
            .dstack/workflows.yaml:6:33: error: slurm extra option '--time' comes from the workflow's 'resources' and 'max_duration'; set them there
                  extra: [-N 2, --output=x, --time=10]
                                            ^
            """)
    }

    @Test("dstack status shows Slurm's word while a job waits in the queue")
    func displayStatus() {
        var record = JobRecord(id: "r-1-a", workflow: "a", cacheKey: "k", dependsOn: [], artifacts: [])
        record.status = .preparing
        #expect(record.displayStatus == "preparing")
        record.slurm = SlurmJobState(id: "7", state: "PENDING", reason: "Resources")
        #expect(record.displayStatus == "pending (Resources)")
        record.status = .running
        record.slurm = SlurmJobState(id: "7", state: "RUNNING")
        #expect(record.displayStatus == "running")
        record.status = .failed
        record.slurm = SlurmJobState(id: "7", state: "PENDING", reason: "Resources")
        #expect(record.displayStatus == "failed")
    }
}
