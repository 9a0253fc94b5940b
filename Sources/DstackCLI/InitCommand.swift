import ArgumentParser
import DstackCore
import Foundation

extension DstackCommand {
    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create .dstack/ with example workflows, variables and a commented hosts file."
        )

        @Option(name: .customShort("C"), help: ArgumentHelp("Directory to initialise (default: the current one).", valueName: "dir"))
        var directory: String?

        @Flag(help: "Overwrite files that exist.")
        var force = false

        func run() throws {
            let root = URL(fileURLWithPath: directory ?? FileManager.default.currentDirectoryPath)
            let dir = root.appendingPathComponent(".dstack")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            var written: [String] = []
            var kept: [String] = []
            for (name, text) in Templates.files {
                let url = dir.appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: url.path), !force {
                    kept.append(".dstack/\(name)")
                    continue
                }
                try Data(text.utf8).write(to: url)
                written.append(".dstack/\(name)")
            }
            for file in written { Terminal.out("wrote \(file)") }
            for file in kept { Terminal.out("kept \(file) (exists; --force overwrites)") }
            Terminal.out("next: 'dstack dag train' shows the plan, 'dstack run train' runs it")
        }
    }
}

/// The files `dstack init` writes.
enum Templates {
    static let files: [(String, String)] = [
        ("workflows.yaml", """
        # Workflows: each runs its commands with /bin/sh -e in a copy of the repository.
        # Reference: docs/workflows.md
        workflows:
          - name: prepare
            help: Makes the data set
            commands:
              - mkdir -p data
              - echo "1 2 3 4 5" > data/numbers.txt
            artifacts: [data]

          - name: train
            help: Fits a model on the data
            depends-on: [prepare]
            commands:
              - mkdir -p model
              - echo "epochs=${{ epochs }}" > model/params.txt
              - cat data/numbers.txt >> model/params.txt
            artifacts: [model]

        """),
        ("variables.yaml", """
        # Defaults for ${{ name }} references; override with 'dstack run WORKFLOW --name value'.
        variables:
          global:
            seed: 1
          train:
            epochs: 10

        """),
        ("hosts.example.yaml", """
        # A hosts inventory: copy to .dstack/hosts.yaml to run jobs on these machines over SSH.
        # Without one, jobs run on this machine (the local runner). Every field: hosts.example at the repository root.
        #
        # defaults:
        #   user: ml
        #   port: 22
        #   identity_file: ~/.ssh/id_ed25519
        #   workdir: ~/.dstack-runner
        # runners:
        #   - name: gpu-1
        #     host: 10.0.0.11
        #     labels: [a100]
        #   - name: gpu-2
        #     host: lab-gpu-2          # a Host alias from ~/.ssh/config
        #     max_jobs: 4

        """),
    ]
}
