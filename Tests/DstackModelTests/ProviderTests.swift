import DstackModel
import Testing

/// Early dstack's `provider:` workflows (bash, docker, python) and its resource forms.
@Suite("providers")
struct ProviderTests {
    @Test("provider: python of March 2022 loads: python_script, requirements, a GPU count from a variable")
    func pythonScriptOfMarch() throws {
        let project = try #require(loaded("""
            workflows:
              - name: train-mnist
                provider: python
                requirements: requirements.txt
                python_script: train.py
                artifacts: [model]
                resources:
                  gpu: ${{ gpu }}
            """, variables: "variables:\n  train-mnist:\n    gpu: 0\n"))
        let wf = try #require(project.workflow(named: "train-mnist"))
        #expect(wf.provider?.value == "python")
        #expect(wf.commands.isEmpty)
        #expect(wf.python?.script?.value == "train.py")
        #expect(wf.python?.requirements?.value == "requirements.txt")
        #expect(wf.python?.version == nil)
        #expect(wf.python?.command == "python \"train.py\"")
    }

    @Test("python and version are read from the scalar's text: 3.10 stays 3.10", arguments: ["python", "version"])
    func versionText(key: String) throws {
        let project = try #require(loaded("""
            workflows:
              - name: w
                provider: python
                \(key): 3.10
                file: main.py
            """))
        #expect(project.workflows.first?.python?.version?.value == "3.10")
    }

    @Test("args: a string is shell text; a list is one word per item, expansions kept live")
    func arguments() throws {
        let project = try #require(loaded("""
            workflows:
              - name: line
                provider: python
                script: train.py
                args: --epochs ${{ epochs }} $lr
              - name: words
                provider: python
                script: my train.py
                args: ["--name", "a \\"b\\" c", "$lr"]
                before_run: [echo before]
            """, variables: "variables:\n  global: {epochs: 3, lr: 0.1}\n"))
        #expect(project.workflow(named: "line")?.python?.command == "python \"train.py\" --epochs ${{ epochs }} $lr")
        #expect(project.workflow(named: "words")?.python?.command == #"python "my train.py" "--name" "a \"b\" c" "$lr""#)
        #expect(project.workflow(named: "words")?.commands.map(\.value) == ["echo before"])
    }

    @Test("provider: bash runs before_run then commands, with a Python environment when it names one")
    func bash() throws {
        let project = try #require(loaded("""
            workflows:
              - name: b
                provider: bash
                python: 3.9
                requirements: req.txt
                before_run: [pip list]
                commands: [python x.py]
              - name: plain
                provider: bash
                commands: [echo hi]
            """))
        let b = try #require(project.workflow(named: "b"))
        #expect(b.commands.map(\.value) == ["pip list", "python x.py"])
        #expect(b.python?.version?.value == "3.9")
        #expect(b.python?.script == nil)
        #expect(project.workflow(named: "plain")?.python == nil)
    }

    @Test("provider: docker runs its commands in its image")
    func docker() throws {
        let project = try #require(loaded("""
            workflows:
              - name: d
                provider: docker
                image: ubuntu:22.04
                commands: [echo hi]
            """))
        #expect(project.workflows.first?.image?.value == "ubuntu:22.04")
        #expect(project.workflows.first?.python == nil)
    }

    static let errors: [Golden] = [
        Golden(name: "a provider of early dstack not supported here", workflows: """
            workflows:
              - name: get
                provider: curl
                url: https://example.com/data.zip
              - name: nb
                provider: notebook
              - name: dist
                provider: torchrun
                nodes: 2
            """, expected: """
            .dstack/workflows.yaml:3:15: error: provider 'curl' is not supported yet; use 'bash', 'docker' or 'python'
                provider: curl
                          ^
            .dstack/workflows.yaml:4:5: error: unknown key 'url' in a workflow
                url: https://example.com/data.zip
                ^
            .dstack/workflows.yaml:6:15: error: provider 'notebook' is not supported yet; use 'bash', 'docker' or 'python'
                provider: notebook
                          ^
            .dstack/workflows.yaml:8:15: error: provider 'torchrun' is not supported yet; use 'bash', 'docker' or 'python'
                provider: torchrun
                          ^
            .dstack/workflows.yaml:9:5: error: 'nodes' (multi-node jobs) is not supported yet
                nodes: 2
                ^
            """),
        Golden(name: "a misspelt provider", workflows: """
            workflows:
              - name: w
                provider: pyhton
                script: x.py
            """, expected: """
            .dstack/workflows.yaml:3:15: error: provider 'pyhton' is not supported yet (did you mean 'python'?); use 'bash', 'docker' or 'python'
                provider: pyhton
                          ^
            """),
        Golden(name: "python provider keys without a provider", workflows: """
            workflows:
              - name: w
                requirements: r.txt
                script: x.py
                commands: [x]
            """, expected: """
            .dstack/workflows.yaml:3:5: error: 'requirements' is a key of 'provider: python' or 'provider: bash'; add that line to the workflow
                requirements: r.txt
                ^
            .dstack/workflows.yaml:4:5: error: 'script' is a key of 'provider: python'; add that line to the workflow
                script: x.py
                ^
            """),
        Golden(name: "commands with provider: python, and no script", workflows: """
            workflows:
              - name: w
                provider: python
                commands: [python x.py]
            """, expected: """
            .dstack/workflows.yaml:2:5: error: a workflow with 'provider: python' needs 'script' (the Python file to run)
              - name: w
                ^
            .dstack/workflows.yaml:4:16: error: 'commands' is not a key of 'provider: python' (it runs 'script'); use 'provider: bash' to write commands
                commands: [python x.py]
                           ^
            """),
        Golden(name: "a python version that is not one", workflows: """
            workflows:
              - name: w
                provider: python
                python: 3.10.1
                version: 3.9
                script: x.py
                python_script: y.py
            """, expected: """
            .dstack/workflows.yaml:4:13: error: 'python' must be a Python version like 3.10, got '3.10.1'
                python: 3.10.1
                        ^
            .dstack/workflows.yaml:5:5: error: 'python' and 'version' both give the Python version; keep one
                version: 3.9
                ^
            .dstack/workflows.yaml:7:5: error: 'script' and 'python_script' both name the script; keep one
                python_script: y.py
                ^
            """),
        Golden(name: "docker without an image, bash keys on docker", workflows: """
            workflows:
              - name: w
                provider: docker
                requirements: r.txt
                commands: [x]
            """, expected: """
            .dstack/workflows.yaml:2:5: error: a workflow with 'provider: docker' needs 'image'
              - name: w
                ^
            .dstack/workflows.yaml:4:5: error: 'requirements' is not a key of 'provider: docker'
                requirements: r.txt
                ^
            """),
        Golden(name: "keys of early dstack that are not supported", workflows: """
            workflows:
              - name: hello
                template:
                  image: ubuntu
                  commands: [x]
              - name: w
                gpu: 1
                env: [PYTHONPATH=src]
                deps: [{tag: data}]
                ports: 1
                commands: [x]
            """, expected: """
            .dstack/workflows.yaml:3:5: error: 'template' (early dstack's nesting of February 2022) is not supported; move its keys up into the workflow
                template:
                ^
            .dstack/workflows.yaml:7:5: error: 'gpu' belongs under 'resources' (resources: {gpu: 1})
                gpu: 1
                ^
            .dstack/workflows.yaml:8:5: error: 'env' (a list of NAME=value, dstack 0.0.x) is not supported; write 'environment:' as a mapping (NAME: value)
                env: [PYTHONPATH=src]
                ^
            .dstack/workflows.yaml:9:5: error: 'deps' (dstack 0.0.x) is not supported; write 'depends-on:' with workflow names, or 'workflow:tag' for a tagged run
                deps: [{tag: data}]
                ^
            .dstack/workflows.yaml:10:5: error: 'ports' is not supported yet: runners here do not expose ports
                ports: 1
                ^
            """),
    ]

    @Test("errors name the key or provider and say what to write", arguments: errors)
    func errorsAreReported(golden: Golden) {
        #expect(diagnostics(golden.workflows, variables: golden.variables) == golden.expected)
    }

    @Test("artifacts may be written {path: PATH} as in dstack 0.0.x; other artifact keys are refused")
    func artifactPaths() throws {
        let project = try #require(loaded("""
            workflows:
              - name: w
                commands: [x]
                artifacts: [{path: data}, logs]
            """))
        #expect(project.workflows.first?.artifacts.map(\.value) == ["data", "logs"])
        #expect(diagnostics("workflows:\n  - name: w\n    commands: [x]\n    artifacts: [{path: data, mount: true}, {path: ../x}]\n") == """
            .dstack/workflows.yaml:4:30: error: 'mount' (dstack 0.0.x's artifacts mounted between jobs) is not supported; an artifact here is a path
                artifacts: [{path: data, mount: true}, {path: ../x}]
                                         ^
            .dstack/workflows.yaml:4:51: error: artifact path '../x' escapes the repository with '..'; artifacts are paths relative to the repository root
                artifacts: [{path: data, mount: true}, {path: ../x}]
                                                              ^
            """)
    }
}

/// The resource forms early dstack's files used, resolved with their variables.
@Suite("early resource forms")
struct EarlyResourceTests {
    @Test("gpu: N, gpu: {count: N}, memory: 32GB, gpu: ${{ gpu }} and gpu: $gpu", arguments: [
        ("gpu: 1", 1, nil), ("gpu:\n        count: 2", 2, nil), ("memory: 32GB\n      gpu: 1", 1, Int64(32) << 30),
        ("gpu: ${{ gpu }}", 3, nil), ("gpu: $gpu", 3, nil), ("gpu: ${gpu}", 3, nil), ("gpu:\n        count: $gpu", 3, nil),
    ] as [(String, Int, Int64?)])
    func forms(resources: String, gpu: Int, memory: Int64?) throws {
        let project = try #require(loaded("workflows:\n  - name: w\n    commands: [x]\n    resources:\n      \(resources)\n",
                                          variables: "variables:\n  w: {gpu: 3}\n"))
        let spec = try #require(project.workflows.first).resources
        let resolved = try Resources.resolve(spec, values: ["gpu": "3"], sources: project.sources)
        #expect(resolved.gpu == gpu)
        #expect(resolved.memory == memory)
    }
}
