import DstackCore
import DstackModel
import Foundation
import Testing

/// `Planner.closure`: the workflow plus its runtime dependencies, dependencies first, each exactly once.
@Suite struct PlannerClosureTests {
    /// a <- b, a <- c, (b, c) <- d, d <- e; f depends on a tag; g is unrelated.
    static let graph = """
    workflows:
      - name: a
        commands: [echo a]
      - name: b
        depends-on: [a]
        commands: [echo b]
      - name: c
        depends-on: [a]
        commands: [echo c]
      - name: d
        depends-on: [b, c]
        commands: [echo d]
      - name: e
        depends-on: [d, a]
        commands: [echo e]
      - name: f
        depends-on: [e, b:best]
        commands: [echo f]
      - name: g
        commands: [echo g]
    """

    struct Case: Sendable, CustomTestStringConvertible {
        let target: String
        let expected: [String]
        var testDescription: String { "closure(\(target))" }
    }

    @Test(arguments: [
        Case(target: "a", expected: ["a"]),
        Case(target: "b", expected: ["a", "b"]),
        Case(target: "d", expected: ["a", "b", "c", "d"]),
        Case(target: "e", expected: ["a", "b", "c", "d", "e"]),
        Case(target: "f", expected: ["a", "b", "c", "d", "e", "f"]),
        Case(target: "g", expected: ["g"]),
    ])
    func closureIsDependenciesFirstEachOnce(_ c: Case) throws {
        let planner = Planner(project: try loadProject(Self.graph))
        let names = try planner.closure(of: c.target).map(\.name.value)
        #expect(names == c.expected)
    }

    @Test func everyJobComesAfterEachOfItsDependenciesInAWideDiamond() throws {
        // top <- m0...m49 <- bottom, and each middle job also depends on its left neighbour.
        var text = "workflows:\n  - name: top\n    commands: [echo]\n"
        for i in 0..<50 {
            let deps = i == 0 ? "[top]" : "[top, m\(i - 1)]"
            text += "  - name: m\(i)\n    depends-on: \(deps)\n    commands: [echo]\n"
        }
        text += "  - name: bottom\n    depends-on: [\((0..<50).reversed().map { "m\($0)" }.joined(separator: ", "))]\n    commands: [echo]\n"
        let project = try loadProject(text)
        let closure = try Planner(project: project).closure(of: "bottom")
        let position = Dictionary(uniqueKeysWithValues: closure.enumerated().map { ($1.name.value, $0) })
        #expect(closure.count == 52)
        #expect(position.count == 52, "a workflow appears twice")
        for wf in closure {
            for dep in wf.dependsOn {
                #expect(position[dep.workflow]! < position[wf.name.value]!, "\(dep.workflow) after \(wf.name.value)")
            }
        }
        #expect(closure.first?.name.value == "top")
        #expect(closure.last?.name.value == "bottom")
    }

    @Test func aTenThousandDeepChainDoesNotOverflowTheStack() throws {
        let project = chainProject(10_000)
        let planner = Planner(project: project)
        let closure = try planner.closure(of: "w9999")
        #expect(closure.count == 10_000)
        #expect(closure.map(\.name.value) == (0..<10_000).map { "w\($0)" })

        let started = Date()
        let plan = try planner.plan("w9999", overrides: [:], snapshotId: "snap", runName: "deep-chain-1", tags: [:])
        let seconds = Date().timeIntervalSince(started)
        #expect(plan.jobs.count == 10_000)
        #expect(Set(plan.jobs.map(\.cacheKey)).count == 10_000, "keys collide along the chain")
        #expect(plan.jobs.last?.dependsOn == ["w9998"])
        // DESIGN.md §8 says well under a second; the margin here is for a busy 2-core machine and debug builds.
        #expect(seconds < 30, "planning 10,000 jobs took \(seconds) s")
    }

    @Test
    func aTenThousandDeepChainLoadsFromYAML() throws {
        var text = "workflows:\n  - name: w0\n    commands: [echo]\n"
        for i in 1..<10_000 { text += "  - name: w\(i)\n    depends-on: [w\(i - 1)]\n    commands: [echo]\n" }
        let project = try loadProject(text)
        #expect(try Planner(project: project).closure(of: "w9999").count == 10_000)
    }

    @Test func anUnknownTargetIsAConfigErrorWithASuggestion() throws {
        let planner = Planner(project: try loadProject(Self.graph))
        let error = #expect(throws: ConfigError.self) { try planner.closure(of: "dd") }
        #expect(error?.description.contains("unknown workflow 'dd' (did you mean 'd'?)") == true, "\(String(describing: error))")
    }

    @Test func variablesForHelpAreThoseOfTheClosureEachOnce() throws {
        let project = try loadProject(Self.graph, variables: """
        variables:
          global: {seed: 1}
          a: {size: 10, seed: 2}
          d: {depth: 3}
          g: {unrelated: x}
        """)
        let planner = Planner(project: project)
        let vars = planner.variables(for: try planner.closure(of: "d"))
        #expect(vars.map(\.name) == ["seed", "size", "depth"])
    }
}
