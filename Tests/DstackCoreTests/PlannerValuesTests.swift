import DstackCore
import DstackModel
import Foundation
import Testing

/// What the planner puts into a job: environment, paths, resources, and the errors it reports with a location.
@Suite struct PlannerValuesTests {
    func plan(_ workflows: String, variables: String? = nil, target: String, overrides: [String: String] = [:],
              run: String = "keen-lynx-3") throws -> Plan {
        try Planner(project: try loadProject(workflows, variables: variables))
            .plan(target, overrides: overrides, snapshotId: "s", runName: run, tags: [:])
    }

    @Test func variablesAreExportedUpperCaseWithUnderscoresBesideTheBuiltins() throws {
        let plan = try plan("""
        workflows:
          - name: train
            commands: [echo]
            environment:
              EXTRA: lr=${{ learning-rate }}
        """, variables: """
        variables:
          global: {batch-size: 32}
          train: {learning-rate: 0.1, Mixed_Case-x: y}
        """, target: "train")
        let env = try #require(plan.jobs.first).launch.environment
        #expect(env["BATCH_SIZE"] == "32")
        #expect(env["LEARNING_RATE"] == "0.1")
        #expect(env["MIXED_CASE_X"] == "y")
        #expect(env["EXTRA"] == "lr=0.1")
        #expect(env["DSTACK_RUN_NAME"] == "keen-lynx-3")
        #expect(env["DSTACK_JOB_ID"] == "keen-lynx-3-train")
        #expect(env["DSTACK_WORKFLOW"] == "train")
        #expect(env["batch-size"] == nil && env["BATCH-SIZE"] == nil)
        #expect(plan.jobs.first?.variables == ["batch-size": "32", "learning-rate": "0.1", "Mixed_Case-x": "y"],
                "builtins are not variables of the job")
    }

    /// Two variables that export the same environment name: one value silently wins, chosen by Dictionary order.
    @Test func variablesWhoseEnvironmentNamesCollideAreRefused() throws {
        #expect(throws: ConfigError.self) {
            _ = try loadProject("workflows:\n  - name: w\n    commands: [echo]\n",
                                variables: "variables:\n  w: {batch-size: 1, batch_size: 2}\n")
        }
    }

    @Test func artifactPathsAndWorkingDirAreNormalised() throws {
        let plan = try plan("""
        workflows:
          - name: w
            working_dir: ./src//app/
            commands: [echo]
            artifacts: [./out/, data//deep/./x, a/b/../c, "${{ where }}/"]
        """, variables: "variables:\n  w: {where: ./results//final}\n", target: "w")
        let job = try #require(plan.jobs.first)
        #expect(job.artifacts == ["out", "data/deep/x", "a/c", "results/final"])
        #expect(job.launch.workingDir == "src/app")
    }

    struct BadPath: Sendable, CustomTestStringConvertible {
        let value: String
        let problem: String
        var testDescription: String { value }
    }

    @Test(arguments: [
        BadPath(value: "../outside", problem: "escapes the repository"),
        BadPath(value: "/etc", problem: "is absolute"),
        BadPath(value: "a/../../b", problem: "escapes the repository"),
    ])
    func aTemplatedArtifactThatEscapesIsAConfigErrorAtItsLine(_ bad: BadPath) throws {
        let error = #expect(throws: ConfigError.self) {
            try plan("""
            workflows:
              - name: w
                commands: [echo]
                artifacts:
                  - ${{ where }}
            """, variables: "variables:\n  w: {where: ok}\n", target: "w", overrides: ["where": bad.value])
        }
        let d = try #require(error?.diagnostics.first)
        #expect(d.file == ".dstack/workflows.yaml")
        #expect(d.mark.line == 5)
        #expect(d.message.contains("artifact path '\(bad.value)' \(bad.problem)"), "\(d.message)")
    }

    struct Junk: Sendable, CustomTestStringConvertible {
        let field: String
        let value: String
        let message: String
        var testDescription: String { "\(field): \(value)" }
    }

    @Test(arguments: [
        Junk(field: "gpu", value: "lots", message: "gpu count must be a whole number, got 'lots'"),
        Junk(field: "gpu", value: "-1", message: "gpu count must be a whole number, got '-1'"),
        Junk(field: "gpu", value: "1.5", message: "gpu count must be a whole number, got '1.5'"),
        Junk(field: "gpu", value: "", message: "gpu count must be a whole number, got ''"),
        Junk(field: "cpu", value: "0", message: "cpu must be a whole number of CPUs (1 or more), got '0'"),
        Junk(field: "memory", value: "a lot", message: "memory must be a size like 16GB or 512MB, got 'a lot'"),
    ])
    func aTemplatedResourceThatResolvesToJunkIsAConfigErrorAtFileLine(_ junk: Junk) throws {
        let workflows = """
        workflows:
          - name: prep
            commands: [echo prep]
          - name: train
            depends-on: [prep]
            commands: [echo train]
            resources:
              \(junk.field): ${{ value }}
        """
        let error = #expect(throws: ConfigError.self) {
            try plan(workflows, variables: "variables:\n  train: {value: '1'}\n", target: "train",
                     overrides: ["value": junk.value])
        }
        let d = try #require(error?.diagnostics.first)
        #expect(d.file == ".dstack/workflows.yaml")
        #expect(d.mark.line == 8)
        #expect(d.mark.column == junk.field.count + 9, "the column of the value")
        #expect(d.message == junk.message)
        #expect(error?.description.hasPrefix(".dstack/workflows.yaml:8:\(junk.field.count + 9): error: \(junk.message)") == true)
        #expect(d.sourceLine?.contains("${{ value }}") == true)
    }

    @Test func aTemplatedGPUCountThatResolvesToANumberIsUsed() throws {
        let plan = try plan("""
        workflows:
          - name: train
            commands: [echo]
            resources:
              gpu: ${{ gpus }}
              memory: ${{ mem }}
        """, variables: "variables:\n  train: {gpus: 2, mem: 1GB}\n", target: "train")
        #expect(plan.jobs.first?.resources.gpu == 2)
        #expect(plan.jobs.first?.resources.memory == 1 << 30)
    }
}
