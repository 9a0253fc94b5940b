import DstackModel
import Testing

/// Valid files load into the model: the example from DESIGN.md §2 and each feature on its own.
@Suite("loading valid files")
struct LoadingTests {
    static let designWorkflows = """
        workflows:
          - name: prepare
            help: Downloads and tokenizes the dataset
            commands:
              - python prepare.py --out data
            artifacts: [data]
          - name: train
            help: Trains the model
            image: pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime   # optional: container, where the runner has an engine
            depends-on: [prepare]          # runs 'prepare' first in the same run, unless cached
            commands:
              - python train.py --epochs ${{ epochs }} --lr ${{ lr }}
            artifacts: [checkpoints]
            environment: {WANDB_MODE: offline}
            working_dir: src               # relative to the repository root
            resources:
              gpu: ${{ gpu }}              # an int, or {count: 1, name: A100, memory: 40GB}
              cpu: 4
              memory: 16GB
          - name: evaluate
            depends-on: [train:best]       # tag dependency: reuse the artifacts of the run tagged 'best', never rerun
            commands: [python eval.py]

        """
    static let designVariables = """
        variables:
          global:   {seed: 1}
          train:    {epochs: 10, lr: 0.001, gpu: 1}

        """

    @Test("the example of DESIGN.md §2 loads")
    func designExample() throws {
        let project = try #require(loaded(Self.designWorkflows, variables: Self.designVariables))
        #expect(project.workflowNames == ["prepare", "train", "evaluate"])

        let prepare = try #require(project.workflow(named: "prepare"))
        #expect(prepare.help == "Downloads and tokenizes the dataset")
        #expect(prepare.commands.map(\.value) == ["python prepare.py --out data"])
        #expect(prepare.artifacts.map(\.value) == ["data"])
        #expect(prepare.dependsOn.isEmpty)

        let train = try #require(project.workflow(named: "train"))
        #expect(train.image?.value == "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime")
        #expect(train.dependsOn.map(\.spelled) == ["prepare"])
        #expect(train.commands.map(\.value) == ["python train.py --epochs ${{ epochs }} --lr ${{ lr }}"])
        #expect(train.commands[0].mark == Mark(line: 12, column: 9))
        #expect(train.commands[0].file == ".dstack/workflows.yaml")
        #expect(train.artifacts.map(\.value) == ["checkpoints"])
        #expect(train.environment.map(\.name) == ["WANDB_MODE"])
        #expect(train.environment.map(\.value.value) == ["offline"])
        #expect(train.workingDir?.value == "src")
        #expect(train.resources.gpuCount?.value == "${{ gpu }}")
        #expect(train.resources.cpu?.value == "4")
        #expect(train.resources.memory?.value == "16GB")

        let evaluate = try #require(project.workflow(named: "evaluate"))
        let dependency = try #require(evaluate.dependsOn.first)
        #expect((dependency.workflow, dependency.tag, dependency.spelled) == ("train", "best", "train:best"))
        #expect(dependency.mark == Mark(line: 21, column: 18))
        #expect(evaluate.commands.map(\.value) == ["python eval.py"])

        #expect(project.variables.global.map(\.name) == ["seed"])
        #expect(project.variables.visible(to: "train").map(\.name) == ["seed", "epochs", "lr", "gpu"])
        #expect(project.workflow(named: "nope") == nil)
    }

    @Test("depends-on names workflows and tagged runs")
    func dependencies() throws {
        let project = try #require(loaded("""
            workflows:
              - name: a
                commands: [x]
              - name: b
                depends-on:
                  - a
                  - a:best
                  - b:v2-final
                commands: [y]

            """))
        let deps = try #require(project.workflow(named: "b")).dependsOn
        #expect(deps.map(\.workflow) == ["a", "a", "b"])
        #expect(deps.map(\.tag) == [nil, "best", "v2-final"])
    }

    @Test("environment keeps the order it was written in")
    func environmentOrder() throws {
        let project = try #require(loaded("""
            workflows:
              - name: a
                commands: [x]
                environment:
                  ZED: 1
                  ALPHA: "two"
                  MIDDLE: ${{ seed }}
                  _UNDER: ''

            """, variables: "variables:\n  global: {seed: 7}\n"))
        let environment = try #require(project.workflow(named: "a")).environment
        #expect(environment.map(\.name) == ["ZED", "ALPHA", "MIDDLE", "_UNDER"])
        #expect(environment.map(\.value.value) == ["1", "two", "${{ seed }}", ""])
    }

    @Test("gpu is a count or a mapping of count, name and memory")
    func gpuResources() throws {
        let project = try #require(loaded("""
            workflows:
              - name: count
                commands: [x]
                resources: {gpu: 2, memory: 512MB}
              - name: mapping
                commands: [x]
                resources:
                  gpu: {count: 1, name: A100, memory: 40GB}

            """))
        let count = try #require(project.workflow(named: "count")).resources
        #expect(count.gpuCount?.value == "2")
        #expect(count.gpuName == nil)
        #expect(try Resources.resolve(count, values: [:], sources: project.sources)
            == Resources(gpu: 2, memory: 512 << 20))

        let mapping = try #require(project.workflow(named: "mapping")).resources
        #expect(mapping.gpuCount?.value == "1")
        #expect(mapping.gpuName?.value == "A100")
        #expect(mapping.gpuMemory?.value == "40GB")
        #expect(try Resources.resolve(mapping, values: [:], sources: project.sources)
            == Resources(gpu: 1, gpuName: "A100", gpuMemory: 40 << 30))
    }

    @Test("a templated resource is checked once substituted, pointing at where it was written")
    func templatedResource() throws {
        let project = try #require(loaded(Self.designWorkflows, variables: Self.designVariables))
        let spec = try #require(project.workflow(named: "train")).resources
        #expect(try Resources.resolve(spec, values: ["gpu": "2"], sources: project.sources).gpu == 2)
        #expect {
            try Resources.resolve(spec, values: ["gpu": "many"], sources: project.sources)
        } throws: { error in
            (error as? ConfigError)?.description == """
                .dstack/workflows.yaml:17:12: error: gpu count must be a whole number, got 'many'
                      gpu: ${{ gpu }}              # an int, or {count: 1, name: A100, memory: 40GB}
                           ^
                """
        }
    }

    @Test("a workflow's own variables win over global ones, in a stable order")
    func variableScopes() throws {
        let project = try #require(loaded("""
            workflows:
              - name: prepare
                commands: [x]
              - name: train
                commands: [y]

            """, variables: """
            variables:
              global: {seed: 1, lr: 0.1, batch-size: 32}
              train: {lr: 0.001, epochs: 10}

            """))
        let train = project.variables.visible(to: "train")
        #expect(train.map(\.name) == ["seed", "lr", "batch-size", "epochs"])
        #expect(train.map(\.value.value) == ["1", "0.001", "32", "10"])
        #expect(train[1].value.mark == Mark(line: 3, column: 15))
        #expect(train[1].value.file == ".dstack/variables.yaml")
        #expect(project.variables.visible(to: "prepare").map(\.value.value) == ["1", "0.1", "32"])
        #expect(train[2].environmentName == "BATCH_SIZE")
    }

    @Test("variables become environment variables in upper case, dashes to underscores", arguments: [
        ("batch-size", "BATCH_SIZE"), ("lr", "LR"), ("run_name", "RUN_NAME"), ("a-b-c", "A_B_C"),
    ])
    func environmentNames(variable: String, environment: String) {
        #expect(environmentName(for: variable) == environment)
    }

    @Test("values keep their text: a quoted \"1\" stays the string it was, numbers keep their spelling")
    func scalarText() throws {
        let project = try #require(loaded("""
            workflows:
              - name: a
                commands: [x]

            """, variables: """
            variables:
              global:
                quoted: "1"
                octal: 007
                float: 1.50
                empty:
                text: 'yes'

            """))
        let values = project.variables.global.map(\.value.value)
        #expect(values == ["1", "007", "1.50", "", "yes"])
    }

    @Test("comments, flow style and block style read the same")
    func styles() throws {
        let block = try #require(loaded("""
            # the project's workflows
            workflows:   # a list
              - name: a  # first
                commands:
                  - echo one   # trailing comments are not part of the command
                  - echo two
                artifacts:
                  - out

            """))
        let flow = try #require(loaded("""
            {workflows: [{name: a, commands: [echo one, echo two], artifacts: [out]}]}

            """))
        for project in [block, flow] {
            let workflow = try #require(project.workflow(named: "a"))
            #expect(workflow.commands.map(\.value) == ["echo one", "echo two"])
            #expect(workflow.artifacts.map(\.value) == ["out"])
        }
    }

    @Test("a block scalar command keeps its lines")
    func blockCommand() throws {
        let project = try #require(loaded("""
            workflows:
              - name: a
                commands:
                  - |
                    set -x
                    echo "${{ run_name }}: ${{ job_id }}"

            """))
        #expect(project.workflow(named: "a")?.commands.map(\.value) == ["set -x\necho \"${{ run_name }}: ${{ job_id }}\"\n"])
    }

    @Test("artifacts and working_dir may use '..' that stays inside the repository")
    func insidePaths() throws {
        let project = try #require(loaded("""
            workflows:
              - name: a
                commands: [x]
                artifacts: [a/../b, ./out/]
                working_dir: src/../tools

            """))
        #expect(project.workflow(named: "a")?.artifacts.map(\.value) == ["a/../b", "./out/"])
    }

    @Test("a project without variables.yaml, or with an empty one, loads")
    func noVariables() throws {
        let workflows = "workflows:\n  - name: a\n    commands: ['echo ${{ run_name }}']\n"
        #expect(loaded(workflows)?.variables == VariableTable())
        #expect(loaded(workflows, variables: "")?.variables == VariableTable())
        #expect(loaded(workflows, variables: "variables:\n")?.variables == VariableTable())
    }

    @Test("a file saved with CRLF line ends loads, and its errors quote the right line")
    func crlf() throws {
        #expect(loaded("workflows:\r\n  - name: a\r\n    commands: [x]\r\n")?.workflowNames == ["a"])
        #expect(diagnostics("workflows:\r\n  - name: a\r\n    comands: [x]\r\n") == """
            .dstack/workflows.yaml:3:5: error: unknown key 'comands' in a workflow (did you mean 'commands'?)
                comands: [x]
                ^
            """)
    }
}
