import DstackCore
import DstackModel
import DstackRunners
import Foundation
import Testing

/// How early dstack's files are planned: `$name` references, `$variables_as_args`, the python provider's
/// commands, and which runners can take a job that needs a Python.
@Suite struct CompatPlanTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("DstackModelTests/Fixtures/compat")

    func plan(_ workflows: String, variables: String? = nil, target: String, overrides: [String: String] = [:]) throws -> Plan {
        try Planner(project: try loadProject(workflows, variables: variables))
            .plan(target, overrides: overrides, snapshotId: "s", runName: "keen-lynx-3", tags: [:])
    }

    @Test("the April 2022 tutorial's $size, $run_name, $job_id and $variables_as_args are substituted, overrides too")
    func dollarTutorial() throws {
        let dir = Self.fixtures.appendingPathComponent("2022-04-dollar-variables")
        let workflows = try String(contentsOf: dir.appendingPathComponent("workflows.yaml"), encoding: .utf8)
        let variables = try String(contentsOf: dir.appendingPathComponent("variables.yaml"), encoding: .utf8)
        let plan = try plan(workflows, variables: variables, target: "tune", overrides: ["size": "355M", "steps": "a b"])
        #expect(plan.job("get-weights")?.launch.commands.last == "python3 get_weights.py 355M")
        #expect(plan.job("tune")?.launch.commands.last == "PYTHONPATH=src python3 tune.py --run keen-lynx-3 --job keen-lynx-3-tune --size 355M --size 355M --weights_dir weights --steps 'a b' --learning_rate 0.0001 --sample_every 50")
        #expect(plan.job("tune")?.launch.environment["SIZE"] == "355M", "variables stay exported in upper case")
    }

    @Test("the run's name does not reach the cache key through $run_name")
    func runNameNotInKey() throws {
        let project = try loadProject("workflows:\n  - name: w\n    commands: [echo $run_name $job_id]\n")
        let a = try Planner(project: project).plan("w", overrides: [:], snapshotId: "s", runName: "a-b-1", tags: [:])
        let b = try Planner(project: project).plan("w", overrides: [:], snapshotId: "s", runName: "c-d-2", tags: [:])
        #expect(a.jobs[0].launch.commands == ["echo a-b-1 a-b-1-w"])
        #expect(a.jobs[0].cacheKey == b.jobs[0].cacheKey)
    }

    @Test("provider: python runs the environment script, before_run, then the script with its arguments as words")
    func pythonCommands() throws {
        let plan = try plan("""
            workflows:
              - name: fit
                provider: python
                version: 3.9
                file: fit.py
                args: ["--epochs", "${{ epochs }}", "--out", "$out", "$HOME"]
                requirements: ${{ req }}
                before_run: [echo before]
                resources:
                  gpu: $gpus
            """, variables: "variables:\n  fit: {epochs: 3, out: \"my model\", req: requirements.txt, gpus: 1}\n",
            target: "fit")
        let job = try #require(plan.jobs.first)
        #expect(job.launch.commands.count == 3)
        #expect(job.launch.commands[0] == PythonEnvironment.prelude(version: "3.9", requirements: "requirements.txt"))
        #expect(job.launch.commands[0].hasSuffix("\ndstack_python_env 3.9 requirements.txt"))
        #expect(job.launch.commands[1] == "echo before")
        #expect(job.launch.commands[2] == #"python "fit.py" "--epochs" "3" "--out" "my model" "$HOME""#)
        #expect(job.resources.gpu == 1)
        #expect(job.python == PythonNeed(version: "3.9", image: "dstackai/python:3.9-cuda-11.1"))
        #expect(job.launch.image == nil)
    }

    @Test("a CPU job and a job with its own image get no default image")
    func noDefaultImage() throws {
        let plan = try plan("""
            workflows:
              - name: cpu
                provider: python
                script: a.py
              - name: own
                provider: python
                image: python:3.12
                script: a.py
                resources: {gpu: 1}
            """, target: "cpu")
        #expect(plan.jobs.first?.python == PythonNeed(version: nil, image: nil))
        let own = try self.plan("workflows:\n  - name: own\n    provider: python\n    image: python:3.12\n    script: a.py\n    resources: {gpu: 1}\n", target: "own")
        #expect(own.jobs.first?.python?.image == nil)
        #expect(own.jobs.first?.launch.image == "python:3.12")
    }

    func info(pythons: [String], engine: String? = nil) -> RunnerInfo {
        var info = RunnerInfo(name: "r", os: "Linux", cpus: 4, memory: 8 << 30, gpus: [GPU(index: 0, name: "T4", memory: 16 << 30)], maxJobs: 2)
        info.pythons = pythons
        info.engine = engine
        return info
    }

    @Test("a runner without the Python asked for is not a fit, unless the job runs in an image there")
    func runnerChoice() throws {
        let plan = try plan("""
            workflows:
              - name: cpu
                provider: python
                python: 3.10
                script: a.py
              - name: gpu
                provider: python
                python: 3.10
                script: a.py
                resources: {gpu: 1}
              - name: any
                provider: python
                script: a.py
              - name: plain
                commands: [echo]
            """, target: "cpu")
        let cpu = try #require(plan.jobs.first)
        #expect(cpu.misfit(on: info(pythons: ["3.10", "3.11"])) == nil)
        #expect(cpu.misfit(on: info(pythons: ["3.11"])) == "Python 3.10 (python3.10 on its PATH; it has 3.11)")
        #expect(cpu.misfit(on: info(pythons: [], engine: "docker")) == "Python 3.10 (python3.10 on its PATH; it has none)",
                "a CPU job runs on the host even where there is an engine")
        #expect(cpu.launch(on: info(pythons: ["3.10"], engine: "docker")).image == nil)

        let project = try loadProject("""
            workflows:
              - name: gpu
                provider: python
                python: 3.10
                script: a.py
                resources: {gpu: 1}
              - name: any
                provider: python
                script: a.py
              - name: plain
                commands: [echo]
            """)
        func job(_ name: String) throws -> PlannedJob {
            try #require(try Planner(project: project).plan(name, overrides: [:], snapshotId: "s", runName: "r-1", tags: [:]).jobs.first)
        }
        let gpu = try job("gpu")
        #expect(gpu.misfit(on: info(pythons: [], engine: "docker")) == nil, "in its default image there")
        #expect(gpu.launch(on: info(pythons: [], engine: "docker")).image == "dstackai/python:3.10-cuda-11.1")
        #expect(gpu.misfit(on: info(pythons: ["3.9"])) == "Python 3.10 (python3.10 on its PATH; it has 3.9)")
        #expect(gpu.launch(on: info(pythons: ["3.10"])).image == nil)
        #expect(try job("any").misfit(on: info(pythons: [])) == "Python 3 (python3 on its PATH; it has none)")
        #expect(try job("any").misfit(on: info(pythons: ["3.8"])) == nil)
        #expect(try job("plain").misfit(on: info(pythons: [])) == nil)
    }

    @Test("interpreters on PATH are found by version, each once, in numeric order")
    func versionsOnPath() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        for (dir, name) in [("a", "python3.9"), ("a", "python3.10"), ("b", "python3.10"), ("b", "python3.11-config"),
                            ("b", "python3"), ("b", "python2.7")] {
            try scratch.write("\(dir)/\(name)", "#!/bin/sh\n", mode: 0o755)
        }
        try scratch.write("b/python3.12", "not executable\n", mode: 0o644)
        #expect(PythonEnvironment.versions(onPath: "\(scratch.at("a").path):\(scratch.at("b").path):/nonexistent") == ["3.9", "3.10"])
    }
}
