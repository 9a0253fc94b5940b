import DstackModel
import Testing

/// The strict schema of workflows.yaml: unknown keys, wrong types and missing fields, each reported in full.
@Suite("workflows.yaml schema")
struct SchemaTests {
    static let cases: [Golden] = [
        Golden(name: "unknown top-level key", workflows: """
            workflow:
              - name: train
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:1:1: error: unknown key 'workflow' in workflows.yaml (did you mean 'workflows'?)
            workflow:
            ^
            """),
        Golden(name: "misspelt 'commands'", workflows: """
            workflows:
              - name: train
                comands: [python train.py]

            """, expected: """
            .dstack/workflows.yaml:3:5: error: unknown key 'comands' in a workflow (did you mean 'commands'?)
                comands: [python train.py]
                ^
            """),
        Golden(name: "'depends_on' for 'depends-on'", workflows: """
            workflows:
              - name: train
                depends_on: [prepare]
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:5: error: unknown key 'depends_on' in a workflow (did you mean 'depends-on'?)
                depends_on: [prepare]
                ^
            """),
        Golden(name: "'artifact' for 'artifacts'", workflows: """
            workflows:
              - name: train
                commands: [x]
                artifact: [checkpoints]

            """, expected: """
            .dstack/workflows.yaml:4:5: error: unknown key 'artifact' in a workflow (did you mean 'artifacts'?)
                artifact: [checkpoints]
                ^
            """),
        Golden(name: "unknown key with nothing close", workflows: """
            workflows:
              - name: train
                commands: [x]
                retries: 3

            """, expected: """
            .dstack/workflows.yaml:4:5: error: unknown key 'retries' in a workflow
                retries: 3
                ^
            """),
        Golden(name: "duplicate key", workflows: """
            workflows:
              - name: train
                commands: [x]
                commands: [y]

            """, expected: """
            .dstack/workflows.yaml:4:5: error: duplicate key 'commands' in a workflow (first at line 3)
                commands: [y]
                ^
            """),
        Golden(name: "commands as a string", workflows: """
            workflows:
              - name: train
                commands: python train.py

            """, expected: """
            .dstack/workflows.yaml:3:15: error: 'commands' must be a list of strings, got a string (write it as a list: '- item' lines or [a, b])
                commands: python train.py
                          ^
            """),
        Golden(name: "a command that YAML reads as a mapping", workflows: """
            workflows:
              - name: train
                commands:
                  - echo step: 1

            """, expected: """
            .dstack/workflows.yaml:4:9: error: each item of 'commands' must be a string, got a mapping; put the item in quotes if it holds ': '
                  - echo step: 1
                    ^
            """),
        Golden(name: "artifacts as a mapping", workflows: """
            workflows:
              - name: train
                commands: [x]
                artifacts: {data: out}

            """, expected: """
            .dstack/workflows.yaml:4:16: error: 'artifacts' must be a list of strings, got a mapping
                artifacts: {data: out}
                           ^
            """),
        Golden(name: "environment as a list", workflows: """
            workflows:
              - name: train
                commands: [x]
                environment: [WANDB_MODE=offline]

            """, expected: """
            .dstack/workflows.yaml:4:18: error: 'environment' must be a mapping of 'key: value' lines, got a list
                environment: [WANDB_MODE=offline]
                             ^
            """),
        Golden(name: "gpu that is no number", workflows: """
            workflows:
              - name: train
                commands: [x]
                resources:
                  gpu: lots

            """, expected: """
            .dstack/workflows.yaml:5:12: error: 'gpu' must be a whole number, got 'lots'
                  gpu: lots
                       ^
            """),
        Golden(name: "memory that is no size", workflows: """
            workflows:
              - name: train
                commands: [x]
                resources:
                  memory: 16 parsecs

            """, expected: """
            .dstack/workflows.yaml:5:15: error: 'memory' must be a size like 16GB or 512MB, got '16 parsecs'
                  memory: 16 parsecs
                          ^
            """),
        Golden(name: "gpu mapping with a bad count and memory", workflows: """
            workflows:
              - name: train
                commands: [x]
                resources:
                  gpu: {count: two, name: A100, memory: 40 GBs}

            """, expected: """
            .dstack/workflows.yaml:5:20: error: gpu count must be a whole number, got 'two'
                  gpu: {count: two, name: A100, memory: 40 GBs}
                               ^
            .dstack/workflows.yaml:5:45: error: gpu memory must be a size like 16GB or 512MB, got '40 GBs'
                  gpu: {count: two, name: A100, memory: 40 GBs}
                                                        ^
            """),
        Golden(name: "zero CPUs", workflows: """
            workflows:
              - name: train
                commands: [x]
                resources: {cpu: 0}

            """, expected: """
            .dstack/workflows.yaml:4:22: error: 'cpu' must be a whole number (1 or more), got '0'
                resources: {cpu: 0}
                                 ^
            """),
        Golden(name: "missing name", workflows: """
            workflows:
              - help: trains the model
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:2:5: error: workflow is missing 'name'
              - help: trains the model
                ^
            """),
        Golden(name: "invalid name", workflows: """
            workflows:
              - name: 2nd run
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:2:11: error: workflow name '2nd run' must start with a letter or '_' and hold only letters, digits, '_' and '-'
              - name: 2nd run
                      ^
            """),
        Golden(name: "missing commands", workflows: """
            workflows:
              - name: train
                help: trains the model

            """, expected: """
            .dstack/workflows.yaml:2:5: error: workflow 'train' is missing 'commands'
              - name: train
                ^
            """),
        Golden(name: "empty commands", workflows: """
            workflows:
              - name: train
                commands: []

            """, expected: """
            .dstack/workflows.yaml:3:15: error: 'commands' is empty; a workflow needs at least one command
                commands: []
                          ^
            """),
        Golden(name: "commands with nothing after the colon", workflows: """
            workflows:
              - name: train
                commands:

            """, expected: """
            .dstack/workflows.yaml:3:14: error: 'commands' is empty; a workflow needs at least one command
                commands:
                         ^
            """),
        Golden(name: "workflows that is no list", workflows: "workflows: {train: x}\n", expected: """
            .dstack/workflows.yaml:1:12: error: 'workflows' must be a list of workflows ('- name: ...' items), got a mapping
            workflows: {train: x}
                       ^
            """),
        Golden(name: "absolute artifact path", workflows: """
            workflows:
              - name: train
                commands: [x]
                artifacts: [/data]

            """, expected: """
            .dstack/workflows.yaml:4:17: error: artifact path '/data' is absolute; artifacts are paths relative to the repository root
                artifacts: [/data]
                            ^
            """),
        Golden(name: "artifact paths escaping with '..'", workflows: """
            workflows:
              - name: train
                commands: [x]
                artifacts: [../x, a/../../x, a/../b]

            """, expected: """
            .dstack/workflows.yaml:4:17: error: artifact path '../x' escapes the repository with '..'; artifacts are paths relative to the repository root
                artifacts: [../x, a/../../x, a/../b]
                            ^
            .dstack/workflows.yaml:4:23: error: artifact path 'a/../../x' escapes the repository with '..'; artifacts are paths relative to the repository root
                artifacts: [../x, a/../../x, a/../b]
                                  ^
            """),
        Golden(name: "absolute working_dir", workflows: """
            workflows:
              - name: train
                commands: [x]
                working_dir: /src

            """, expected: """
            .dstack/workflows.yaml:4:18: error: working_dir '/src' is absolute; it is relative to the repository root
                working_dir: /src
                             ^
            """),
        Golden(name: "escaping working_dir", workflows: """
            workflows:
              - name: train
                commands: [x]
                working_dir: src/../..

            """, expected: """
            .dstack/workflows.yaml:4:18: error: working_dir 'src/../..' escapes the repository with '..'; it is relative to the repository root
                working_dir: src/../..
                             ^
            """),
        Golden(name: "invalid environment variable names", workflows: """
            workflows:
              - name: train
                commands: [x]
                environment:
                  MY-VAR: 1
                  1ST: 2

            """, expected: """
            .dstack/workflows.yaml:5:7: error: 'MY-VAR' is not a valid environment variable name (letters, digits and '_', not starting with a digit)
                  MY-VAR: 1
                  ^
            .dstack/workflows.yaml:6:7: error: '1ST' is not a valid environment variable name (letters, digits and '_', not starting with a digit)
                  1ST: 2
                  ^
            """),
        Golden(name: "dependencies that are no name or no tag", workflows: """
            workflows:
              - name: train
                depends-on: [":best", "train:", "train:a:b"]
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:18: error: ':best' is not a dependency; write a workflow name or 'workflow:tag'
                depends-on: [":best", "train:", "train:a:b"]
                             ^
            .dstack/workflows.yaml:3:27: error: 'train:' is not a dependency; write a workflow name or 'workflow:tag'
                depends-on: [":best", "train:", "train:a:b"]
                                      ^
            .dstack/workflows.yaml:3:37: error: 'train:a:b' is not a dependency; write a workflow name or 'workflow:tag'
                depends-on: [":best", "train:", "train:a:b"]
                                                ^
            """),
    ]

    @Test(arguments: cases)
    func reportsWhereAndWhat(_ golden: Golden) {
        #expect(diagnostics(golden.workflows, variables: golden.variables) == golden.expected)
    }
}
