import DstackModel
import Foundation
import Testing

/// An inventory that must not load, and the whole error it must produce.
struct InventoryGolden: Sendable, CustomTestStringConvertible {
    /// What the case shows, as the test report names it.
    let name: String
    /// The text of `hosts.yaml`.
    let text: String
    /// The whole rendered `ConfigError`.
    let expected: String

    var testDescription: String { name }
}

/// Parses `text` as `hosts.yaml`.
private func inventory(_ text: String) throws(ConfigError) -> Inventory {
    try Inventory.parse(SourceFile(displayName: "hosts.yaml", text: text))
}

/// The inventory at the repository root that documents the format; it must always load.
private func hostsExample() throws -> SourceFile {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let text = try String(contentsOf: root.appendingPathComponent("hosts.example"), encoding: .utf8)
    return SourceFile(displayName: "hosts.example", text: text)
}

/// The strict schema of the hosts inventory: each mistake reported in full, with the line and a caret.
@Suite("hosts inventory schema")
struct InventorySchemaTests {
    static let cases: [InventoryGolden] = [
        InventoryGolden(name: "unknown top-level key", text: """
            runner:
              - name: a
                host: b

            """, expected: """
            hosts.yaml:1:1: error: unknown key 'runner' in the hosts inventory (did you mean 'runners'?)
            runner:
            ^
            """),
        InventoryGolden(name: "misspelt runner keys, not also reported as missing", text: """
            runners:
              - name: gpu-1
                hostname: 10.0.0.1
                identity: ~/.ssh/x

            """, expected: """
            hosts.yaml:3:5: error: unknown key 'hostname' in a runner (did you mean 'host'?)
                hostname: 10.0.0.1
                ^
            hosts.yaml:4:5: error: unknown key 'identity' in a runner (did you mean 'identity_file'?)
                identity: ~/.ssh/x
                ^
            """),
        InventoryGolden(name: "a storage_path that is not absolute", text: """
            runners:
              - name: gpu-1
                host: 10.0.0.1
                storage_path: mnt/dstack

            """, expected: """
            hosts.yaml:4:19: error: storage_path 'mnt/dstack' must be absolute: the path at which this runner sees the storage directory
                storage_path: mnt/dstack
                              ^
            """),
        InventoryGolden(name: "unknown key with nothing close", text: """
            runners:
              - name: gpu-1
                host: x
                retries: 3

            """, expected: """
            hosts.yaml:4:5: error: unknown key 'retries' in a runner
                retries: 3
                ^
            """),
        InventoryGolden(name: "unknown key in defaults", text: """
            defaults:
              usr: ml
            runners:
              - {name: a, host: b}

            """, expected: """
            hosts.yaml:2:3: error: unknown key 'usr' in 'defaults' (did you mean 'user'?)
              usr: ml
              ^
            """),
        InventoryGolden(name: "a runner's own key in defaults", text: """
            defaults:
              host: x
            runners:
              - {name: a, host: b}

            """, expected: """
            hosts.yaml:2:3: error: 'host' cannot be a default; give it to each runner under 'runners:'
              host: x
              ^
            """),
        InventoryGolden(name: "duplicate key", text: """
            runners:
              - name: a
                host: b
                host: c

            """, expected: """
            hosts.yaml:4:5: error: duplicate key 'host' in a runner (first at line 3)
                host: c
                ^
            """),
        InventoryGolden(name: "missing name and missing host", text: """
            runners:
              - host: 10.0.0.1
              - name: b

            """, expected: """
            hosts.yaml:2:5: error: a runner is missing 'name'; give it a unique name
              - host: 10.0.0.1
                ^
            hosts.yaml:3:5: error: runner 'b' is missing 'host' (an address, a host name or a Host alias of ~/.ssh/config)
              - name: b
                ^
            """),
        InventoryGolden(name: "duplicate runner name", text: """
            runners:
              - name: gpu
                host: a
              - name: gpu
                host: b

            """, expected: """
            hosts.yaml:4:11: error: duplicate runner name 'gpu' (first at line 2); names must be unique
              - name: gpu
                      ^
            """),
        InventoryGolden(name: "runner name with a space", text: """
            runners:
              - name: gpu 1
                host: a

            """, expected: """
            hosts.yaml:2:11: error: runner name 'gpu 1' must start with a letter or digit and hold only letters, digits, '-', '_' and '.'
              - name: gpu 1
                      ^
            """),
        InventoryGolden(name: "runner name starting with a dot", text: """
            runners:
              - name: ..
                host: a

            """, expected: """
            hosts.yaml:2:11: error: runner name '..' must start with a letter or digit and hold only letters, digits, '-', '_' and '.'
              - name: ..
                      ^
            """),
        InventoryGolden(name: "port out of range", text: """
            runners:
              - name: a
                host: b
                port: 70000

            """, expected: """
            hosts.yaml:4:11: error: 'port' must be a whole number from 1 to 65535, got '70000'
                port: 70000
                      ^
            """),
        InventoryGolden(name: "port zero in defaults", text: """
            defaults:
              port: 0
            runners:
              - {name: a, host: b}

            """, expected: """
            hosts.yaml:2:9: error: 'port' must be a whole number from 1 to 65535, got '0'
              port: 0
                    ^
            """),
        InventoryGolden(name: "port as a list", text: """
            runners:
              - name: a
                host: b
                port: [22]

            """, expected: """
            hosts.yaml:4:11: error: 'port' must be a whole number from 1 to 65535, got a list
                port: [22]
                      ^
            """),
        InventoryGolden(name: "max_jobs zero", text: """
            runners:
              - name: a
                host: b
                max_jobs: 0

            """, expected: """
            hosts.yaml:4:15: error: 'max_jobs' must be a whole number (1 or more), got '0'
                max_jobs: 0
                          ^
            """),
        InventoryGolden(name: "empty runners list", text: """
            runners: []

            """, expected: """
            hosts.yaml:1:10: error: 'runners' is empty; list at least one runner ('- name: ...' with 'host: ...'), or delete the file to run jobs on this machine (the local runner)
            runners: []
                     ^
            """),
        InventoryGolden(name: "runners with nothing under it", text: """
            defaults:
              user: ml
            runners:

            """, expected: """
            hosts.yaml:3:1: error: 'runners' is empty; list at least one runner ('- name: ...' with 'host: ...'), or delete the file to run jobs on this machine (the local runner)
            runners:
            ^
            """),
        InventoryGolden(name: "no runners key", text: """
            defaults:
              user: ml

            """, expected: """
            hosts.yaml:1:1: error: missing 'runners:' list; list the machines to run jobs on, or delete the file to run jobs on this machine (the local runner)
            defaults:
            ^
            """),
        InventoryGolden(name: "empty file", text: "", expected: """
            hosts.yaml:1:1: error: the file is empty; list the runners under 'runners:', or delete the file to run jobs on this machine (the local runner)

            ^
            """),
        InventoryGolden(name: "runners as a mapping", text: """
            runners:
              gpu-1: {host: a}

            """, expected: """
            hosts.yaml:2:3: error: 'runners' must be a list of runners ('- name: ...' items), got a mapping
              gpu-1: {host: a}
              ^
            """),
        InventoryGolden(name: "a runner written as a string", text: """
            runners:
              - gpu-1

            """, expected: """
            hosts.yaml:2:5: error: each runner must be a mapping with 'name:' and 'host:', got a string
              - gpu-1
                ^
            """),
        InventoryGolden(name: "wrong types and empty values", text: """
            runners:
              - name: a
                host: [x]
                user:
                identity_file:
                workdir: ""

            """, expected: """
            hosts.yaml:3:11: error: 'host' must be a string, got a list
                host: [x]
                      ^
            hosts.yaml:4:10: error: 'user' must be a string, got null
                user:
                     ^
            hosts.yaml:5:19: error: 'identity_file' must be a path or a list of paths, got null
                identity_file:
                              ^
            hosts.yaml:6:14: error: 'workdir' is empty; give a value or remove the key
                workdir: ""
                         ^
            """),
        InventoryGolden(name: "identity_file as an empty list", text: """
            runners:
              - name: a
                host: b
                identity_file: []

            """, expected: """
            hosts.yaml:4:20: error: 'identity_file' is empty; give a path or a list of paths, or remove the key
                identity_file: []
                               ^
            """),
        InventoryGolden(name: "labels as a string, and a bad label", text: """
            defaults:
              labels: a100
            runners:
              - name: a
                host: b
                labels: [ok, "not ok"]

            """, expected: """
            hosts.yaml:2:11: error: 'labels' must be a list of strings, got a string (write it as a list: '- item' lines or [a, b])
              labels: a100
                      ^
            hosts.yaml:6:18: error: label 'not ok' must start with a letter or digit and hold only letters, digits, '-', '_' and '.'
                labels: [ok, "not ok"]
                             ^
            """),
        InventoryGolden(name: "host holding a user, a port, a space, or nothing", text: """
            runners:
              - {name: a, host: ml@10.0.0.1}
              - {name: b, host: "10.0.0.1:2222"}
              - {name: c, host: "two hosts"}
              - {name: d, host: ""}
              - {name: e, host: "fe80::1"}

            """, expected: """
            hosts.yaml:2:21: error: host 'ml@10.0.0.1' holds a user; write the user under 'user:' and only the host under 'host:'
              - {name: a, host: ml@10.0.0.1}
                                ^
            hosts.yaml:3:21: error: host '10.0.0.1:2222' holds a port; write the port under 'port:' and only the host under 'host:'
              - {name: b, host: "10.0.0.1:2222"}
                                ^
            hosts.yaml:4:21: error: host 'two hosts' holds a space; write one address, host name or Host alias of ~/.ssh/config
              - {name: c, host: "two hosts"}
                                ^
            hosts.yaml:5:21: error: 'host' is empty; write an address, a host name or a Host alias of ~/.ssh/config
              - {name: d, host: ""}
                                ^
            """),
        InventoryGolden(name: "workdir under another user's home", text: """
            runners:
              - name: a
                host: b
                workdir: ~bob/dstack

            """, expected: """
            hosts.yaml:4:14: error: workdir '~bob/dstack' starts with '~user', which dstack does not expand; write an absolute path or one relative to the login directory
                workdir: ~bob/dstack
                         ^
            """),
        InventoryGolden(name: "resources: bad values and an unknown gpu key", text: """
            runners:
              - name: a
                host: b
                resources: {gpu: two, memory: lots, cpu: 0}
              - name: c
                host: d
                resources:
                  gpu: {count: -1, model: A100, memory: 40}
                  disk: 1TB

            """, expected: """
            hosts.yaml:4:22: error: 'gpu' must be a whole number (0 or more), got 'two'
                resources: {gpu: two, memory: lots, cpu: 0}
                                 ^
            hosts.yaml:4:35: error: 'memory' must be a size like 16GB or 512MB, got 'lots'
                resources: {gpu: two, memory: lots, cpu: 0}
                                              ^
            hosts.yaml:4:46: error: 'cpu' must be a whole number (1 or more), got '0'
                resources: {gpu: two, memory: lots, cpu: 0}
                                                         ^
            hosts.yaml:8:20: error: gpu count must be a whole number (0 or more), got '-1'
                  gpu: {count: -1, model: A100, memory: 40}
                               ^
            hosts.yaml:8:24: error: unknown key 'model' in 'gpu'
                  gpu: {count: -1, model: A100, memory: 40}
                                   ^
            hosts.yaml:9:7: error: unknown key 'disk' in 'resources'
                  disk: 1TB
                  ^
            """),
        InventoryGolden(name: "YAML syntax error", text: """
            runners:
              - name: a
                host: [b

            """, expected: """
            hosts.yaml:3:11: error: unclosed '[': this list has no closing ']'
                host: [b
                      ^
            """),
        InventoryGolden(name: "every error at once, in file order", text: """
            defaults:
              max_jobs: none
            runners:
              - name: a
                host: b
                port: ssh
              - name: a
                host: c
              - hots: d

            """, expected: """
            hosts.yaml:2:13: error: 'max_jobs' must be a whole number (1 or more), got 'none'
              max_jobs: none
                        ^
            hosts.yaml:6:11: error: 'port' must be a whole number from 1 to 65535, got 'ssh'
                port: ssh
                      ^
            hosts.yaml:7:11: error: duplicate runner name 'a' (first at line 4); names must be unique
              - name: a
                      ^
            hosts.yaml:9:5: error: unknown key 'hots' in a runner (did you mean 'host'?)
              - hots: d
                ^
            hosts.yaml:9:5: error: a runner is missing 'name'; give it a unique name
              - hots: d
                ^
            """),
    ]

    @Test(arguments: cases)
    func golden(_ c: InventoryGolden) {
        do {
            let parsed = try inventory(c.text)
            Issue.record("expected a configuration error, loaded \(parsed.runners.map(\.name.value))")
        } catch {
            #expect(error.description == c.expected)
        }
    }
}

/// hosts.example is the spec of the format: it loads, into exactly the values it documents.
@Suite("hosts.example")
struct InventoryExampleTests {
    /// A located value whose position is not compared (see `unlocated`).
    func v<T>(_ value: T) -> Located<T> { Located(value, at: Mark(line: 0, column: 0), in: "") }

    /// The inventory with every position cleared, so values can be compared on their own.
    func unlocated(_ inventory: Inventory) -> Inventory {
        func u<T>(_ l: Located<T>) -> Located<T> { v(l.value) }
        func u<T>(_ l: Located<T>?) -> Located<T>? { l.map(u) }
        var out = inventory
        let d = inventory.defaults
        out.defaults = InventoryDefaults(user: u(d.user), port: u(d.port), identityFiles: d.identityFiles?.map(u),
                                         workdir: u(d.workdir), maxJobs: u(d.maxJobs), labels: d.labels.map(u))
        out.runners = inventory.runners.map { r in
            var spec = RunnerSpec(name: u(r.name), host: u(r.host), user: u(r.user), port: u(r.port),
                                  identityFiles: r.identityFiles?.map(u), workdir: u(r.workdir), maxJobs: u(r.maxJobs),
                                  labels: r.labels.map(u), resources: r.resources.map { o in
                                      ResourceOverride(gpuCount: u(o.gpuCount), gpuName: u(o.gpuName), gpuMemory: u(o.gpuMemory),
                                                       cpu: u(o.cpu), memory: u(o.memory))
                                  })
            spec.storagePath = u(r.storagePath)
            spec.slurm = r.slurm
            return spec
        }
        return out
    }

    @Test("hosts.example loads into the values it documents")
    func values() throws {
        let source = try hostsExample()
        let parsed = try Inventory.parse(source)
        var cpuBox = RunnerSpec(name: v("cpu-box"), host: v("10.0.0.20"), user: v("alice"), port: v(2222),
                                identityFiles: [v("~/.ssh/lab_ed25519")], workdir: v("/scratch/dstack"))
        cpuBox.storagePath = v("/mnt/dstack")
        let expected = Inventory(
            defaults: InventoryDefaults(user: v("ml"), port: v(22), identityFiles: [v("~/.ssh/id_ed25519")],
                                        workdir: v("~/.dstack-runner"), maxJobs: v(2), labels: []),
            runners: [
                RunnerSpec(name: v("gpu-1"), host: v("10.0.0.11"), labels: [v("a100"), v("fast-disk")]),
                RunnerSpec(name: v("gpu-2"), host: v("lab-gpu-2"), maxJobs: v(4),
                           resources: ResourceOverride(gpuCount: v(2), cpu: v(32), memory: v(256 << 30))),
                cpuBox,
                {
                    var hpc = RunnerSpec(name: v("hpc"), host: v("login.hpc.example.org"), workdir: v("/shared/ml/.dstack"),
                                         maxJobs: v(50))
                    hpc.slurm = SlurmSettings(partition: "gpu", account: "ml-lab", qos: "normal", time: "4:00:00")
                    return hpc
                }(),
            ],
            source: source)
        #expect(unlocated(parsed) == expected)
    }

    @Test("every value of hosts.example points at its own text")
    func positions() throws {
        let source = try hostsExample()
        let parsed = try Inventory.parse(source)
        func check<T>(_ l: Located<T>?, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
            guard let l else { Issue.record("no value", sourceLocation: sourceLocation); return }
            #expect(l.file == "hosts.example", sourceLocation: sourceLocation)
            let line = source.line(l.mark.line) ?? ""
            #expect(line.dropFirst(l.mark.column - 1).hasPrefix(text), "\(l.mark) is at '\(line)'",
                    sourceLocation: sourceLocation)
        }
        check(parsed.defaults.user, "ml")
        check(parsed.defaults.port, "22")
        check(parsed.defaults.identityFiles?.first, "~/.ssh/id_ed25519")
        check(parsed.defaults.workdir, "~/.dstack-runner")
        check(parsed.defaults.maxJobs, "2")
        for runner in parsed.runners {
            check(runner.name, runner.name.value)
            check(runner.host, runner.host.value)
            for label in runner.labels { check(label, label.value) }
        }
        let gpu2 = try #require(parsed.runner(named: "gpu-2"))
        check(gpu2.maxJobs, "4")
        check(gpu2.resources?.gpuCount, "2")
        check(gpu2.resources?.cpu, "32")
        check(gpu2.resources?.memory, "256GB")
        let box = try #require(parsed.runner(named: "cpu-box"))
        check(box.user, "alice")
        check(box.port, "2222")
        check(box.identityFiles?.first, "~/.ssh/lab_ed25519")
        check(box.workdir, "/scratch/dstack")
        check(box.storagePath, "/mnt/dstack")
    }

    @Test("hosts.example resolved with an ssh config for its alias")
    func resolved() throws {
        let parsed = try Inventory.parse(try hostsExample())
        let ssh = try SSHConfig.parse(text: """
            Host lab-gpu-2
              HostName 10.0.0.12
              User labuser
              IdentityFile ~/.ssh/lab_%r

            """)
        let runners = parsed.resolve(sshConfig: ssh, home: "/home/me", localUser: "me")
        var cpuBox = ResolvedRunner(name: "cpu-box", host: parsed.runners[2].host, hostname: "10.0.0.20", port: 2222, user: "alice",
                                    identityFiles: ["/home/me/.ssh/lab_ed25519"], workdir: "/scratch/dstack", maxJobs: 2)
        cpuBox.storagePath = "/mnt/dstack"
        #expect(runners == [
            ResolvedRunner(name: "gpu-1", host: parsed.runners[0].host, hostname: "10.0.0.11", port: 22, user: "ml",
                           identityFiles: ["/home/me/.ssh/id_ed25519"], workdir: "~/.dstack-runner", maxJobs: 2,
                           labels: ["a100", "fast-disk"]),
            ResolvedRunner(name: "gpu-2", host: parsed.runners[1].host, hostname: "10.0.0.12", port: 22, user: "labuser",
                           identityFiles: ["/home/me/.ssh/lab_labuser"], workdir: "~/.dstack-runner", maxJobs: 4,
                           resources: parsed.runners[1].resources),
            cpuBox,
            {
                var hpc = ResolvedRunner(name: "hpc", host: parsed.runners[3].host, hostname: "login.hpc.example.org", port: 22,
                                         user: "ml", identityFiles: ["/home/me/.ssh/id_ed25519"], workdir: "/shared/ml/.dstack",
                                         maxJobs: 50)
                hpc.slurm = SlurmSettings(partition: "gpu", account: "ml-lab", qos: "normal", time: "4:00:00")
                return hpc
            }(),
        ])
        #expect(runners.map(\.remoteWorkdir) == [".dstack-runner", ".dstack-runner", "/scratch/dstack", "/shared/ml/.dstack"])
    }
}

/// Resolving runners: the runner > ~/.ssh/config > defaults > built-in precedence, field by field.
@Suite("hosts inventory resolution")
struct InventoryResolutionTests {
    let ssh = """
        Host aliased
          HostName 10.9.9.9
          User ssh-user
          Port 2200
          IdentityFile ~/.ssh/from-ssh-%p

        """

    func resolve(_ text: String, ssh: String?) throws -> [ResolvedRunner] {
        try inventory(text).resolve(sshConfig: try ssh.map { try SSHConfig.parse(text: $0) }, home: "/home/me",
                                    localUser: "me")
    }

    @Test("the runner's own value beats ~/.ssh/config, defaults and built-ins")
    func runnerWins() throws {
        let r = try #require(try resolve("""
            defaults: {user: d-user, port: 2300, identity_file: ~/.ssh/d, workdir: /d, max_jobs: 3, labels: [d]}
            runners:
              - name: a
                host: aliased
                user: own-user
                port: 2400
                identity_file: [~/.ssh/own1, /keys/own2]
                workdir: own
                max_jobs: 5
                labels: [own, d]

            """, ssh: ssh).first)
        #expect(r == ResolvedRunner(name: "a", host: r.host, hostname: "10.9.9.9", port: 2400, user: "own-user",
                                    identityFiles: ["/home/me/.ssh/own1", "/keys/own2"], workdir: "own", maxJobs: 5,
                                    labels: ["d", "own"]))
    }

    @Test("~/.ssh/config beats defaults; its identity files expand with the final user and port")
    func sshConfigBeatsDefaults() throws {
        let r = try #require(try resolve("""
            defaults: {user: d-user, port: 2300, identity_file: ~/.ssh/d, workdir: /d, max_jobs: 3}
            runners:
              - {name: a, host: aliased, port: 2500}

            """, ssh: ssh).first)
        #expect(r == ResolvedRunner(name: "a", host: r.host, hostname: "10.9.9.9", port: 2500, user: "ssh-user",
                                    identityFiles: ["/home/me/.ssh/from-ssh-2500"], workdir: "/d", maxJobs: 3))
    }

    @Test("defaults fill what neither the runner nor ~/.ssh/config says")
    func defaultsFill() throws {
        let r = try #require(try resolve("""
            defaults: {user: d-user, port: 2300, identity_file: [~/.ssh/d], workdir: /d, max_jobs: 3, labels: [x]}
            runners:
              - {name: a, host: 10.0.0.1}

            """, ssh: ssh).first)
        #expect(r == ResolvedRunner(name: "a", host: r.host, hostname: "10.0.0.1", port: 2300, user: "d-user",
                                    identityFiles: ["/home/me/.ssh/d"], workdir: "/d", maxJobs: 3, labels: ["x"]))
    }

    @Test("built-in defaults: port 22, the local user, the usual keys, ~/.dstack-runner, the probed CPU count")
    func builtIns() throws {
        let runners = try resolve("runners:\n  - {name: a, host: 10.0.0.1}\n", ssh: nil)
        #expect(runners == [
            ResolvedRunner(name: "a", host: runners[0].host, hostname: "10.0.0.1", port: 22, user: "me",
                           identityFiles: ["/home/me/.ssh/id_ed25519", "/home/me/.ssh/id_ecdsa", "/home/me/.ssh/id_rsa"],
                           workdir: "~/.dstack-runner", maxJobs: nil),
        ])
        #expect(runners[0].remoteWorkdir == ".dstack-runner")
    }

    @Test("a login-relative path never depends on a remote shell expanding '~'", arguments: [
        ("~/.dstack-runner", ".dstack-runner"), ("~", "."), ("~/", "."), ("~//x/y", "x/y"),
        ("/scratch/dstack", "/scratch/dstack"), ("work/dstack", "work/dstack"), ("~bob/x", "~bob/x"),
    ])
    func loginRelative(path: String, expected: String) {
        #expect(loginRelativePath(path) == expected)
    }

    @Test("ProxyJump from ~/.ssh/config resolves into hops; a ProxyCommand gets its tokens expanded")
    func proxyJump() throws {
        let parsed = try inventory("""
            runners:
              - name: gpu-2
                host: lab-gpu-2
              - name: direct
                host: 10.0.0.5
              - name: gpu-3
                host: lab-gpu-3

            """)
        let ssh = try SSHConfig.parse(text: """
            Host lab-gpu-2
              HostName 10.1.0.5
              ProxyJump ops@bastion:2200,login
            Host lab-gpu-3
              ProxyCommand ssh -W %h:%p bastion
            Host bastion
              HostName bastion.example.org
              IdentityFile ~/.ssh/bastion_key
            Host login
              User loginuser

            """)
        let runners = parsed.resolve(sshConfig: ssh, home: "/home/me", localUser: "me")
        #expect(runners.map(\.proxyJump) == ["ops@bastion:2200,login", nil, nil])
        #expect(runners[0].jumps == [
            ResolvedHop(name: "bastion", hostname: "bastion.example.org", port: 2200, user: "ops", identityFiles: ["/home/me/.ssh/bastion_key"]),
            ResolvedHop(name: "login", hostname: "login", port: 22, user: "loginuser",
                        identityFiles: ["/home/me/.ssh/id_ed25519", "/home/me/.ssh/id_ecdsa", "/home/me/.ssh/id_rsa"]),
        ])
        #expect(runners.map(\.proxyCommand) == [nil, nil, "ssh -W %h:%p bastion"])
        #expect(runners[2].expandedProxyCommand(home: "/h", localUser: "me") == "ssh -W lab-gpu-3:22 bastion")
        #expect(ResolvedRunner(name: "t", host: Located("alias", at: Mark(line: 1, column: 1), in: "h"), hostname: "10.0.0.9", port: 2200, user: "ops", identityFiles: [],
                               workdir: "w", proxyCommand: "connect %h %p %r %n %% %x")
            .expandedProxyCommand(home: "/h", localUser: "me") == "connect 10.0.0.9 2200 ops alias % %x")
    }

    @Test("proxy_jump: the runner's, then ~/.ssh/config's, then defaults'; 'none' is direct")
    func proxyJumpField() throws {
        let parsed = try inventory("""
            defaults:
              proxy_jump: gate
            runners:
              - name: own
                host: a
                proxy_jump: me@other:2022
              - name: config
                host: b
              - name: dflt
                host: c
              - name: off
                host: b
                proxy_jump: none

            """)
        let ssh = try SSHConfig.parse(text: "Host b\n  ProxyJump cfg-jump\n")
        let runners = parsed.resolve(sshConfig: ssh, home: "/h", localUser: "me")
        #expect(runners.map { $0.jumps.map(\.name) } == [["other"], ["cfg-jump"], ["gate"], []])
        #expect(runners[0].jumps[0].user == "me" && runners[0].jumps[0].port == 2022)
        #expect(runners[3].proxyJump == nil && runners[3].proxyCommand == nil)
    }

    @Test("transport: the runner's, else defaults', else libssh2; anything else is an error that lists the three")
    func transportField() throws {
        let parsed = try inventory("""
            defaults:
              transport: auto
            runners:
              - name: own
                host: a
                transport: openssh
              - name: dflt
                host: b

            """)
        #expect(parsed.resolve(sshConfig: nil, home: "/h", localUser: "me").map(\.transport) == ["openssh", "auto"])
        #expect(try inventory("runners:\n  - name: x\n    host: y\n").resolve(sshConfig: nil, home: "/h", localUser: "me")[0].transport == "libssh2")
        do {
            _ = try inventory("runners:\n  - name: x\n    host: y\n    transport: opensh\n")
            Issue.record("an unknown transport was accepted")
        } catch {
            #expect("\(error)".contains("4:16: error: transport 'opensh' is not one of libssh2, openssh, auto (did you mean 'openssh'?)"), "\(error)")
        }
    }

    @Test("ProxyJump syntax: user@host:port, ssh:// URIs, IPv6 in brackets, chains; bad values are errors")
    func proxyJumpSyntax() throws {
        #expect(try JumpHop.parseChain("a@b:2200, c ,ssh://d@[::1]:2").get() == [
            JumpHop(user: "a", host: "b", port: 2200), JumpHop(host: "c"), JumpHop(user: "d", host: "::1", port: 2)])
        #expect(try JumpHop.parseChain("none").get() == [])
        #expect(throws: ConfigError.self) {
            try inventory("runners:\n  - name: x\n    host: y\n    proxy_jump: 'a:99999'\n")
        }
        #expect(throws: ConfigError.self) { try inventory("runners:\n  - name: x\n    host: y\n    proxy_jump: 'a,,b'\n") }
    }
}
