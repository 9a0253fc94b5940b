import DstackCore
import DstackModel
import Foundation
import Testing

/// Cache keys: equal inputs give equal keys; a change reaches the job that sees it and everything downstream, only.
@Suite struct CacheKeyTests {
    /// prep <- train <- eval <- all, prep <- side <- all.
    static let workflows = """
    workflows:
      - name: prep
        commands:
          - echo prep ${{ seed }} ${{ size }}
        artifacts: [data]
      - name: train
        depends-on: [prep]
        commands:
          - echo train ${{ epochs }} run=${{ run_name }} job=${{ job_id }}
        environment:
          RUN_LABEL: ${{ run_name }}/${{ job_id }}
      - name: side
        depends-on: [prep]
        commands:
          - echo side ${{ mode }}
      - name: eval
        depends-on: [train]
        commands: [echo eval]
      - name: all
        depends-on: [eval, side]
        commands: [echo all]
    """
    static let variables = """
    variables:
      global: {seed: 1}
      prep: {size: 100}
      train: {epochs: 10}
      side: {mode: fast}
    """

    func plan(_ workflows: String = workflows, overrides: [String: String] = [:], snapshot: String = "snapshot-1",
              run: String = "brave-otter-1", tags: [String: TagDependency] = [:]) throws -> Plan {
        try Planner(project: try loadProject(workflows, variables: Self.variables))
            .plan("all", overrides: overrides, snapshotId: snapshot, runName: run, tags: tags)
    }

    @Test func equalInputsGiveEqualKeys() throws {
        let first = try plan()
        let second = try plan()
        #expect(keys(first) == keys(second))
        #expect(Set(keys(first).values).count == 5, "distinct jobs share a key")
        // An override equal to the default is the same input.
        #expect(keys(try plan(overrides: ["epochs": "10", "seed": "1"])) == keys(first))
    }

    struct Change: Sendable, CustomTestStringConvertible {
        let variable: String
        let value: String
        let changed: Set<String>
        var testDescription: String { "--\(variable) \(value)" }
    }

    @Test(arguments: [
        Change(variable: "epochs", value: "20", changed: ["train", "eval", "all"]),
        Change(variable: "mode", value: "slow", changed: ["side", "all"]),
        Change(variable: "size", value: "5", changed: ["prep", "train", "side", "eval", "all"]),
        Change(variable: "seed", value: "7", changed: ["prep", "train", "side", "eval", "all"]),
    ])
    func aVariableChangesItsJobsKeyAndEveryKeyDownstreamAndNoOther(_ change: Change) throws {
        let before = keys(try plan())
        let after = keys(try plan(overrides: [change.variable: change.value]))
        let changed = Set(before.keys.filter { before[$0] != after[$0] })
        #expect(changed == change.changed)
    }

    @Test func aCommandEditChangesThatJobAndDownstreamOnly() throws {
        let before = keys(try plan())
        let edited = Self.workflows.replacingOccurrences(of: "echo side ${{ mode }}", with: "echo side2 ${{ mode }}")
        let after = keys(try plan(edited))
        #expect(Set(before.keys.filter { before[$0] != after[$0] }) == ["side", "all"])
    }

    @Test func runNameAndJobIdDoNotChangeKeysButReachTheJob() throws {
        let first = try plan(run: "brave-otter-1")
        let second = try plan(run: "calm-yak-27")
        #expect(keys(first) == keys(second))

        let train = try #require(second.job("train"))
        #expect(train.id == "calm-yak-27-train")
        #expect(train.launch.commands == ["echo train 10 run=calm-yak-27 job=calm-yak-27-train"])
        #expect(train.launch.environment["RUN_LABEL"] == "calm-yak-27/calm-yak-27-train")
        #expect(try #require(first.job("train")).launch.commands == ["echo train 10 run=brave-otter-1 job=brave-otter-1-train"])
    }

    @Test func aDifferentSnapshotChangesEveryKey() throws {
        let before = keys(try plan(snapshot: "snapshot-1"))
        let after = keys(try plan(snapshot: "snapshot-2"))
        #expect(before.keys.allSatisfy { before[$0] != after[$0] })
    }

    @Test func overridesReachEveryJobThatSeesTheVariable() throws {
        let plan = try plan(overrides: ["seed": "42", "epochs": "3"])
        for job in plan.jobs {
            #expect(job.variables["seed"] == "42", "\(job.workflow)")
            #expect(job.launch.environment["SEED"] == "42", "\(job.workflow)")
        }
        #expect(plan.job("train")?.variables["epochs"] == "3")
        #expect(plan.job("eval")?.variables["epochs"] == nil, "eval does not see train's variables")
        #expect(plan.job("prep")?.launch.commands == ["echo prep 42 100"])
    }

    @Test func aTagDependencysKeyIsAnInput() throws {
        let text = Self.workflows + """

          - name: report
            depends-on: [train:best]
            commands: [echo report]
        """
        func reportKey(_ tagKey: String) throws -> String {
            let tag = TagDependency(workflow: "train", tag: "best", run: "old-run-1", cacheKey: tagKey, artifacts: ["model"])
            return try Planner(project: try loadProject(text, variables: Self.variables))
                .plan("report", overrides: [:], snapshotId: "s", runName: "r-r-1", tags: ["train:best": tag])
                .jobs.map(\.cacheKey).last!
        }
        #expect(try reportKey("k1") == (try reportKey("k1")))
        #expect(try reportKey("k1") != (try reportKey("k2")))

        let project = try loadProject(text, variables: Self.variables)
        let plan = try Planner(project: project).plan("report", overrides: [:], snapshotId: "s", runName: "r-r-1",
            tags: ["train:best": TagDependency(workflow: "train", tag: "best", run: "old-run-1", cacheKey: "k1", artifacts: [])])
        #expect(plan.jobs.map(\.workflow) == ["report"], "a tag dependency is never rerun")
        #expect(plan.jobs.first?.tagDependencies.map(\.run) == ["old-run-1"])

        let error = #expect(throws: ConfigError.self) {
            try Planner(project: project).plan("report", overrides: [:], snapshotId: "s", runName: "r-r-1", tags: [:])
        }
        #expect(error?.description.contains("no stored results for 'train:best'") == true, "\(String(describing: error))")
    }

    @Test func computeIsOrderInsensitiveWhereOrderIsMeaninglessOnly() {
        func key(commands: [String] = ["a", "b"], env: [String: String] = ["X": "1", "Y": "2"],
                 deps: [String] = ["k1", "k2"], artifacts: [String] = ["out"]) -> String {
            CacheKey.compute(workflow: "w", image: nil, commands: commands, environment: env, workingDir: "",
                             artifacts: artifacts, variables: ["v": "1"], snapshotId: "s", dependencies: deps,
                             tagDependencies: [])
        }
        let base = key()
        #expect(base.count == 64 && base.allSatisfy { $0.isHexDigit })
        #expect(key(deps: ["k2", "k1"]) == base)
        #expect(key(commands: ["b", "a"]) != base, "command order matters")
        #expect(key(commands: ["ab"]) != base, "fields are delimited")
        #expect(key(commands: ["a", "b\ncommand:1:c"]) != key(commands: ["a", "b", "c"]))
        #expect(key(env: ["X": "1", "Y": "3"]) != base)
        #expect(key(artifacts: ["out", "more"]) != base)
    }
}
