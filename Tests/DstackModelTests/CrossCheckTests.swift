import DstackModel
import Testing

/// Checks across workflows and across the two files: names, dependencies, cycles and `${{ }}` references.
@Suite("checks across workflows and variables")
struct CrossCheckTests {
    static let cases: [Golden] = [
        Golden(name: "duplicate workflow name", workflows: """
            workflows:
              - name: train
                commands: [x]
              - name: evaluate
                commands: [y]
              - name: train
                commands: [z]

            """, expected: """
            .dstack/workflows.yaml:6:11: error: duplicate workflow name 'train' (first defined at line 2); names must be unique
              - name: train
                      ^
            """),
        Golden(name: "unknown dependency", workflows: """
            workflows:
              - name: prepare
                commands: [x]
              - name: train
                depends-on: [prepar]
                commands: [y]

            """, expected: """
            .dstack/workflows.yaml:5:18: error: unknown workflow 'prepar' in depends-on of 'train' (did you mean 'prepare'?)
                depends-on: [prepar]
                             ^
            """),
        Golden(name: "unknown tagged dependency", workflows: """
            workflows:
              - name: train
                commands: [x]
              - name: evaluate
                depends-on: [trian:best]
                commands: [y]

            """, expected: """
            .dstack/workflows.yaml:5:18: error: unknown workflow 'trian' in depends-on of 'evaluate' (did you mean 'train'?)
                depends-on: [trian:best]
                             ^
            """),
        Golden(name: "unknown variable in a plain value", workflows: """
            workflows:
              - name: train
                commands:
                  - python train.py --epochs ${{ epoch }}

            """, variables: "variables:\n  train: {epochs: 10}\n", expected: """
            .dstack/workflows.yaml:4:34: error: unknown variable 'epoch' in workflow 'train' (did you mean 'epochs'?); define it under 'global' or 'train' in .dstack/variables.yaml
                  - python train.py --epochs ${{ epoch }}
                                             ^
            """),
        Golden(name: "unknown variable in a quoted value", workflows: """
            workflows:
              - name: train
                commands:
                  - "python train.py --lr ${{ lrr }}"

            """, variables: "variables:\n  global: {lr: 0.1}\n", expected: """
            .dstack/workflows.yaml:4:31: error: unknown variable 'lrr' in workflow 'train' (did you mean 'lr'?); define it under 'global' or 'train' in .dstack/variables.yaml
                  - "python train.py --lr ${{ lrr }}"
                                          ^
            """),
        Golden(name: "a builtin is close to a misspelt one", workflows: """
            workflows:
              - name: train
                commands: ['echo ${{ run-name }}']

            """, expected: """
            .dstack/workflows.yaml:3:22: error: unknown variable 'run-name' in workflow 'train' (did you mean 'run_name'?); define it under 'global' or 'train' in .dstack/variables.yaml
                commands: ['echo ${{ run-name }}']
                                 ^
            """),
        Golden(name: "another workflow's variable is unknown", workflows: """
            workflows:
              - name: prepare
                commands: [x]
              - name: train
                commands: [x]
                working_dir: ${{ data }}

            """, variables: "variables:\n  prepare: {data: raw}\n", expected: """
            .dstack/workflows.yaml:6:18: error: unknown variable 'data' in workflow 'train'; define it under 'global' or 'train' in .dstack/variables.yaml
                working_dir: ${{ data }}
                             ^
            """),
        Golden(name: "a reference never closed", workflows: """
            workflows:
              - name: train
                commands: ['python train.py --lr ${{ lr']

            """, expected: """
            .dstack/workflows.yaml:3:38: error: '${{' is never closed with '}}' in workflow 'train'
                commands: ['python train.py --lr ${{ lr']
                                                 ^
            """),
        Golden(name: "a reference that is no name", workflows: """
            workflows:
              - name: train
                commands:
                  - echo ${{ 2x }}

            """, expected: """
            .dstack/workflows.yaml:4:14: error: '2x' is not a variable name (letters, digits, '_' and '-') in workflow 'train'
                  - echo ${{ 2x }}
                         ^
            """),
        Golden(name: "a cycle of two", workflows: """
            workflows:
              - name: a
                depends-on: [b]
                commands: [x]
              - name: b
                depends-on: [a]
                commands: [y]

            """, expected: """
            .dstack/workflows.yaml:6:18: error: dependency cycle: a -> b -> a
                depends-on: [a]
                             ^
            """),
        Golden(name: "a cycle of three", workflows: """
            workflows:
              - name: a
                depends-on: [b]
                commands: [x]
              - name: b
                depends-on: [c]
                commands: [y]
              - name: c
                depends-on: [a]
                commands: [z]

            """, expected: """
            .dstack/workflows.yaml:9:18: error: dependency cycle: a -> b -> c -> a
                depends-on: [a]
                             ^
            """),
        Golden(name: "a workflow depending on itself", workflows: """
            workflows:
              - name: a
                depends-on: [a]
                commands: [x]

            """, expected: """
            .dstack/workflows.yaml:3:18: error: dependency cycle: a -> a
                depends-on: [a]
                             ^
            """),
        Golden(name: "variables for an unknown workflow", workflows: "workflows:\n  - name: train\n    commands: [x]\n",
               variables: """
            variables:
              global: {seed: 1}
              trian: {lr: 0.1}

            """, expected: """
            .dstack/variables.yaml:3:3: error: variables for unknown workflow 'trian' (did you mean 'train'?); use 'global' or a workflow name
              trian: {lr: 0.1}
              ^
            """),
        Golden(name: "a variable whose value is a list", workflows: """
            workflows:
              - name: train
                commands: ['python train.py --lr ${{ lr }}']

            """, variables: """
            variables:
              train:
                lr: [0.1, 0.01]

            """, expected: """
            .dstack/variables.yaml:3:9: error: variable 'lr' must be a single value (string or number), got a list
                lr: [0.1, 0.01]
                    ^
            """),
        Golden(name: "redefining a builtin", workflows: "workflows:\n  - name: train\n    commands: [x]\n",
               variables: """
            variables:
              global:
                run_name: mine

            """, expected: """
            .dstack/variables.yaml:3:5: error: 'run_name' is a builtin variable and cannot be redefined
                run_name: mine
                ^
            """),
        Golden(name: "an invalid variable name", workflows: "workflows:\n  - name: train\n    commands: [x]\n",
               variables: "variables:\n  global: {\"batch size\": 1}\n", expected: """
            .dstack/variables.yaml:2:12: error: 'batch size' is not a valid variable name (letters, digits, '_' and '-', starting with a letter or '_')
              global: {"batch size": 1}
                       ^
            """),
        Golden(name: "unknown key in variables.yaml", workflows: "workflows:\n  - name: train\n    commands: [x]\n",
               variables: "variable:\n  global: {seed: 1}\n", expected: """
            .dstack/variables.yaml:1:1: error: unknown key 'variable' in variables.yaml (did you mean 'variables'?)
            variable:
            ^
            """),
    ]

    @Test(arguments: cases)
    func reportsWhereAndWhat(_ golden: Golden) {
        #expect(diagnostics(golden.workflows, variables: golden.variables) == golden.expected)
    }

    @Test("every problem is reported, in file order, and one mistake is reported once")
    func severalErrors() {
        // The unknown variable (line 4) is found after the schema errors below it, but is listed first.
        let workflows = """
            workflows:
              - name: prepare
                commands:
                  - python prepare.py --n ${{ samples }}
                artifact: [data]
              - name: train
                depends-on: [prepare, evaluate]
                commands: python train.py
              - name: evaluate
                depends-on: [train]
                commands: [python eval.py]
                resources: {gpu: lots}

            """
        let variables = """
            variables:
              global: {seed: 1}
              trian: {lr: 0.1}

            """
        #expect(diagnostics(workflows, variables: variables) == """
            .dstack/workflows.yaml:4:31: error: unknown variable 'samples' in workflow 'prepare'; define it under 'global' or 'prepare' in .dstack/variables.yaml
                  - python prepare.py --n ${{ samples }}
                                          ^
            .dstack/workflows.yaml:5:5: error: unknown key 'artifact' in a workflow (did you mean 'artifacts'?)
                artifact: [data]
                ^
            .dstack/workflows.yaml:8:15: error: 'commands' must be a list of strings, got a string (write it as a list: '- item' lines or [a, b])
                commands: python train.py
                          ^
            .dstack/workflows.yaml:12:22: error: 'gpu' must be a whole number, got 'lots'
                resources: {gpu: lots}
                                 ^
            .dstack/variables.yaml:3:3: error: variables for unknown workflow 'trian' (did you mean 'train'?); use 'global' or a workflow name
              trian: {lr: 0.1}
              ^
            """)
    }

    @Test("a broken variable is not also reported as unknown where it is used")
    func brokenVariableIsStillDeclared() {
        let text = diagnostics("workflows:\n  - name: train\n    commands: ['x ${{ lr }}']\n",
                               variables: "variables:\n  train: {lr: [1, 2]}\n")
        #expect(text == """
            .dstack/variables.yaml:2:15: error: variable 'lr' must be a single value (string or number), got a list
              train: {lr: [1, 2]}
                          ^
            """)
    }

    @Test("a workflows file that does not parse does not make every variables group unknown")
    func unreadableWorkflowsFile() {
        let text = diagnostics("workflows:\n  - name: \"train\n", variables: "variables:\n  train: {lr: 1}\n")
        #expect(text == """
            .dstack/workflows.yaml:2:11: error: unclosed quote: this string has no closing quote
              - name: "train
                      ^
            """)
    }
}
