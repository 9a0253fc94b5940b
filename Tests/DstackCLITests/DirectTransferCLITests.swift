import Foundation
import Testing

/// Artifacts that go from one SSH runner straight to a bucket (moto) and from there to the next runner, with
/// presigned URLs only; the coordinator moves the plan and the records (docs/transfers.md).
@Suite(.serialized) struct DirectTransferCLITests {
    /// `make` runs on r1 (label `one`) and leaves a 20 MB file, a 3 MB one in a sub-folder, a small one and a link;
    /// `use` runs on r2 (label `two`) and checks them.
    static let workflows = """
    workflows:
      - name: make
        labels: [one]
        commands:
          - mkdir -p ckpt/sub
          - head -c 20000000 /dev/urandom > ckpt/model.bin
          - head -c 3000000 /dev/urandom > ckpt/sub/opt.bin
          - echo small > ckpt/notes.txt
          - ln -s model.bin ckpt/latest
          - sha256sum ckpt/model.bin ckpt/sub/opt.bin > sums.txt
        artifacts: [ckpt, sums.txt]
      - name: use
        labels: [two]
        depends-on: [make]
        commands:
          - sha256sum -c sums.txt
          - test "$(readlink ckpt/latest)" = model.bin
          - cat ckpt/notes.txt
    """

    func setUp(_ bed: SSHBed, _ bucket: Bucket) throws -> (Sandbox, [String: String]) {
        let box = try Sandbox()
        try box.workflows(Self.workflows)
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [one]", 1: "labels: [two]"]))
        let env = box.environment.merging(bed.environment) { $1 }.merging(bucket.environment()) { $1 }
        return (box, env)
    }

    /// Every file under `directory` holding any of `needles`, as `path: needle`.
    func files(under directory: URL, holding needles: [String]) -> [String] {
        var found: [String] = []
        let walker = FileManager.default.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey])
        while let url = walker?.nextObject() as? URL {
            guard (try? url.resourceValues(forKeys: [.isRegularFileKey]))?.isRegularFile == true,
                  let data = try? Data(contentsOf: url) else { continue }
            for needle in needles where data.range(of: Data(needle.utf8)) != nil { found.append("\(url.path): \(needle)") }
        }
        return found
    }

    @Test func largeFilesGoFromRunnerToBucketToRunnerWithNoCredentialOnEitherRunner() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let bucket = try Bucket("dstack-direct")
        defer { bucket.stop() }
        let (box, env) = try setUp(bed, bucket)
        defer { box.cleanup() }

        // `ps` on this machine (where the runners' processes live too) is sampled while the run goes.
        let seen = LockedLines()
        let sampling = Thread {
            while !seen.stopped {
                if let ps = try? Sandbox.run(["ps", "-eo", "args"], in: bed.directory) {
                    for line in ps.stdout.split(separator: "\n")
                    where line.contains(Bucket.secret) || line.contains("X-Amz-Signature") || line.contains("X-Amz-Credential") {
                        seen.append(String(line))
                    }
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        sampling.start()
        let result = try box.dstack(["run", "use"], environment: env)
        seen.stop()
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stdout.contains("| small"))
        #expect(result.stderr.contains("[make] storing 22 MB from r1 straight to the bucket"), "\(result.stderr)")
        #expect(result.stderr.contains("[make] stored 22 MB in "))
        #expect(result.stderr.contains("[use] fetching 22 MB from the bucket straight to r2"))
        #expect(result.stderr.contains("[use] fetched 22 MB in "))
        #expect(!result.stderr.contains("through this machine"), "\(result.stderr)")
        #expect(seen.lines.isEmpty, "ps showed \(seen.lines)")
        // Nothing the runners keep (work directories, homes) holds the secret or a URL's signature.
        #expect(files(under: bed.directory, holding: [Bucket.secret, "X-Amz-Signature", "AKIDTESTING"]).isEmpty)

        // The manifest records the directly stored files with their SHA-256, the rest as usual.
        let run = try box.lastRun(env)
        let listing = try box.dstack(["artifacts", "list", run, "--json"], environment: env)
        #expect(listing.stdout.contains("\"path\" : \"ckpt/model.bin\""))
        #expect(listing.stdout.contains("\"path\" : \"ckpt/latest\""))
        let download = try box.dstack(["artifacts", "download", run, "-o", box.root.appendingPathComponent("got").path], environment: env)
        #expect(download.status == 0, "\(download.output)")
        let check = try Sandbox.run(["sha256sum", "-c", "sums.txt"], in: box.root.appendingPathComponent("got"))
        #expect(check.status == 0, "\(check.output)")

        // Cached now: nothing moves again.
        let again = try box.dstack(["run", "use"], environment: env)
        #expect(again.status == 0)
        #expect(!again.stderr.contains("storing"))
    }

    @Test func aRunnerThatCannotReachTheBucketFallsBackToTheRelayWithANotice() throws {
        // r1's sessions send HTTP through a proxy that is not there: the bucket never answers it.
        let closed = try Bucket.freePort()
        let bed = try SSHBed(2, extraEnvironment: [0: "http_proxy=http://127.0.0.1:\(closed)"])
        defer { bed.stop() }
        let bucket = try Bucket("dstack-relay")
        defer { bucket.stop() }
        let (box, env) = try setUp(bed, bucket)
        defer { box.cleanup() }

        let result = try box.dstack(["run", "use"], environment: env)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("runner 'r1' cannot reach the bucket itself (the bucket did not answer it (curl)); its artifacts go through this machine"),
                "\(result.stderr)")
        #expect(result.stderr.contains("[make] stored 22 MB through this machine in "))
        // r2 reaches it: the dependency goes straight there.
        #expect(!result.stderr.contains("runner 'r2' cannot reach"))
    }

    @Test func temporaryCredentialsKeepEverythingOnTheRelay() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let bucket = try Bucket("dstack-token")
        defer { bucket.stop() }
        var (box, env) = try setUp(bed, bucket)
        defer { box.cleanup() }
        env["AWS_SESSION_TOKEN"] = "tOkEn-never-on-a-runner-42"
        let result = try box.dstack(["run", "use"], environment: env)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("artifacts go through this machine, not straight to the bucket: the bucket's credentials are temporary (AWS_SESSION_TOKEN), and every URL signed with them carries the token"))
        #expect(files(under: bed.directory, holding: ["tOkEn-never-on-a-runner-42"]).isEmpty)
        _ = box
    }

    @Test func runnersThatMountTheStorageDirectoryCopyArtifactsInAndOutThemselves() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows(Self.workflows)
        // Both runners see the storage directory (on this machine, at the same path; on a lab, an NFS mount).
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [one]\nstorage_path: \(box.storage.path)",
                                                                   1: "labels: [two]\nstorage_path: \(box.storage.path)/"]))
        let env = box.environment.merging(bed.environment) { $1 }
        let result = try box.dstack(["run", "use"], environment: env)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.stderr.contains("[make] storing 22 MB from r1 straight to the storage"), "\(result.stderr)")
        #expect(result.stderr.contains("[use] fetching 22 MB from the storage straight to r2"))
        #expect(!result.stderr.contains("through this machine"))
        let run = try box.lastRun(env)
        let download = try box.dstack(["artifacts", "download", run, "-o", box.root.appendingPathComponent("got").path], environment: env)
        #expect(download.status == 0, "\(download.output)")
        #expect(try Sandbox.run(["sha256sum", "-c", "sums.txt"], in: box.root.appendingPathComponent("got")).status == 0)
        // No temporary copy or probe file is left in the storage.
        let left = try Sandbox.run(["find", box.storage.path, "-name", "*.dstack-in-*", "-o", "-name", ".direct-probe-*"], in: box.root)
        #expect(left.stdout.isEmpty, "\(left.stdout)")

        // A runner whose storage_path is not this storage keeps the relay, and says so.
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [one]\nstorage_path: \(box.root.path)/elsewhere",
                                                                   1: "labels: [two]"]))
        let again = try box.dstack(["run", "use", "--no-cache"], environment: env)
        #expect(again.status == 0, "\(again.output)")
        #expect(again.stderr.contains("runner 'r1' cannot reach the storage itself (its storage_path '\(box.root.path)/elsewhere' does not hold this storage); its artifacts go through this machine"), "\(again.stderr)")
    }

    @Test func onATerminalEachTransferHasALiveLineRedrawnInPlaceAndGoneWhenDone() throws {
        let bed = try SSHBed(2)
        defer { bed.stop() }
        let bucket = try Bucket("dstack-live")
        defer { bucket.stop() }
        let (box, env) = try setUp(bed, bucket)
        defer { box.cleanup() }
        var terminal = env
        terminal["TERM"] = "xterm"
        terminal.removeValue(forKey: "NO_COLOR")
        // script(1) gives dstack a pseudo-terminal and copies what it draws.
        let result = try Sandbox.run(["script", "-qfec", "\(Sandbox.binary) run use", "/dev/null"], in: box.project, environment: terminal)
        #expect(result.status == 0, "\(result.output)")
        let screen = result.stdout
        #expect(screen.range(of: #"storing [0-9.]+ MB / 22 MB, [0-9.]+ [KMG]?B/s"#, options: .regularExpression) != nil, "\(screen)")
        #expect(screen.range(of: #"fetching [0-9.]+ MB / 22 MB, [0-9.]+ [KMG]?B/s"#, options: .regularExpression) != nil)
        // Each redraw first goes back over the live lines and clears them.
        #expect(screen.contains("\u{1B}[1F\u{1B}[J"))
        // Gone when done: nothing after the last clear but ordinary lines, none of them a progress line.
        let tail = screen.components(separatedBy: "\u{1B}[J").last ?? ""
        #expect(!tail.contains(" / 22 MB, "), "\(tail)")
    }

    /// `cat` and `tar -x` that move `big.bin` at about 30 MB/s on the runner they are on the PATH of, so that the
    /// relay's stretches to and from runners last long enough to be watched.
    static let slowTools = [
        ("cat", """
        #!/bin/sh
        case "$2" in *big.bin) exec python3 -c 'import sys, time
        f = open(sys.argv[1], "rb")
        while True:
            b = f.read(1 << 20)
            if not b: break
            sys.stdout.buffer.write(b); sys.stdout.flush(); time.sleep(0.03)' "$2";; esac
        exec /bin/cat "$@"

        """),
        ("tar", """
        #!/bin/sh
        case "$2" in *.deps) python3 -c 'import sys, time
        while True:
            b = sys.stdin.buffer.read(1 << 20)
            if not b: break
            sys.stdout.buffer.write(b); sys.stdout.flush(); time.sleep(0.03)' | /bin/tar "$@"; exit;; esac
        exec /bin/tar "$@"

        """),
    ]

    /// Through this machine (`DSTACK_TRANSFERS=relay`), each stretch shows: runner to here, here to the bucket,
    /// the bucket to here, here to the next runner; a line when it starts and one when it ends; `status` shows the
    /// figures of a job that is storing.
    @Test func theRelayShowsEachStretchLiveAndItsStartAndEnd() throws {
        let bin = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-slow-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: bin, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: bin) }
        for (name, text) in Self.slowTools {
            try Data(text.utf8).write(to: bin.appendingPathComponent(name))
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: bin.appendingPathComponent(name).path)
        }
        let path = "PATH=\(bin.path):/usr/local/bin:/usr/bin:/bin"
        let bed = try SSHBed(2, extraEnvironment: [0: path, 1: path])
        defer { bed.stop() }
        let bucket = try Bucket("dstack-relay-live")
        defer { bucket.stop() }
        let box = try Sandbox()
        defer { box.cleanup() }
        try box.workflows("""
            workflows:
              - name: make
                labels: [one]
                commands:
                  - head -c 40000000 /dev/urandom > big.bin
                  - sha256sum big.bin > sums.txt
                artifacts: [big.bin, sums.txt]
              - name: use
                labels: [two]
                depends-on: [make]
                commands:
                  - sha256sum -c sums.txt
            """)
        try box.write(".dstack/hosts.yaml", bed.inventory(extra: [0: "labels: [one]", 1: "labels: [two]"]))
        var env = box.environment.merging(bed.environment) { $1 }.merging(bucket.environment()) { $1 }
        env["DSTACK_TRANSFERS"] = "relay"

        // Without a terminal: one line as each transfer starts and one as it ends; `status` meanwhile.
        let coordinator = try Sandbox.start([Sandbox.binary, "run", "use"], in: box.project, environment: env)
        var figures = ""
        for _ in 0..<300 where figures.isEmpty {
            let listed = try box.dstack(["status", "--json", "-a"], environment: env)
            if listed.status == 0, let runs = (try? JSONSerialization.jsonObject(with: Data(listed.stdout.utf8))) as? [[String: Any]],
               let run = runs.first?["name"] as? String, let jobs = runs.first?["jobs"] as? [[String: Any]],
               jobs.contains(where: { $0["workflow"] as? String == "make" && $0["status"] as? String == "uploading" }) {
                let status = try box.dstack(["status", run], environment: env)
                if let line = status.stdout.split(separator: "\n").first(where: { $0.contains("uploading ") && $0.contains(" / ") }) {
                    figures = String(line)
                }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let result = try coordinator.wait()
        #expect(result.status == 0, "\(result.output)")
        #expect(figures.range(of: #"uploading [0-9.]+ [KMG]?B / 38 MB"#, options: .regularExpression) != nil, "status showed: '\(figures)'")
        #expect(result.stderr.contains("[make] storing 38 MB from r1 through this machine"), "\(result.stderr)")
        #expect(result.stderr.contains("[make] stored 38 MB through this machine in "))
        #expect(result.stderr.contains("[use] fetching 38 MB from the bucket through this machine"))
        #expect(result.stderr.contains("[use] fetched 38 MB in "))
        #expect(!result.stderr.contains(" / 38 MB, "), "no live line without a terminal")

        // On a terminal: a live line for each stretch.
        var terminal = env
        terminal["TERM"] = "xterm"
        terminal.removeValue(forKey: "NO_COLOR")
        let live = try Sandbox.run(["script", "-qfec", "\(Sandbox.binary) run use --no-cache", "/dev/null"], in: box.project, environment: terminal)
        #expect(live.status == 0, "\(live.output)")
        for stretch in ["storing from r1", "storing to the bucket", "fetching from the bucket", "fetching to r2"] {
            #expect(live.stdout.range(of: stretch + #" [0-9.]+ [KMG]?B / 38 MB, [0-9.]+ [KMG]?B/s"#, options: .regularExpression) != nil,
                    "no live line for '\(stretch)': \(live.stdout)")
        }
        let tail = live.stdout.components(separatedBy: "\u{1B}[J").last ?? ""
        #expect(!tail.contains(" / 38 MB, "), "\(tail)")
    }

    @Test func attachAfterTheCoordinatorDiedMidTransferStoresEachArtifactOnce() throws {
        // r1 pauses 3 s before sending anything: the coordinator is killed while the job is storing.
        let bed = try SSHBed(2, extraEnvironment: [0: "DSTACK_TRANSFER_PAUSE=3"])
        defer { bed.stop() }
        let bucket = try Bucket("dstack-attach")
        defer { bucket.stop() }
        let (box, env) = try setUp(bed, bucket)
        defer { box.cleanup() }

        let coordinator = try Sandbox.start([Sandbox.binary, "run", "use"], in: box.project, environment: env)
        var run = ""
        for _ in 0..<300 {
            let status = try box.dstack(["status", "--json", "-a"], environment: env)
            if status.status == 0, let runs = (try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8))) as? [[String: Any]],
               let first = runs.first,
               let jobs = first["jobs"] as? [[String: Any]],
               jobs.contains(where: { $0["workflow"] as? String == "make" && $0["status"] as? String == "uploading" }) {
                run = first["name"] as? String ?? ""
                break
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        #expect(!run.isEmpty, "the job never showed as uploading")
        // People see what moves: the job shows how much of what it stores has landed.
        let status = try box.dstack(["status", run], environment: env)
        #expect(status.stdout.contains("uploading 0 B / 22 MB"), "\(status.stdout)")
        Thread.sleep(forTimeInterval: 1)
        kill(coordinator.process.processIdentifier, SIGKILL)
        _ = try? coordinator.wait()

        let resumed = try box.dstack(["attach", run], environment: env)
        #expect(resumed.status == 0, "\(resumed.output)")
        let runs = try box.statusJSON(run, environment: env)
        let jobs = Dictionary(uniqueKeysWithValues: ((runs.first?["jobs"] as? [[String: Any]]) ?? []).map { ($0["workflow"] as? String ?? "", $0) })
        #expect(jobs["make"]?["status"] as? String == "done")
        #expect(jobs["use"]?["status"] as? String == "done")
        // Each file once in the manifest, once in the bucket, and no unfinished upload left behind.
        let listing = try box.dstack(["artifacts", "list", run, "--json"], environment: env)
        #expect(listing.stdout.components(separatedBy: "\"path\" : \"ckpt/model.bin\"").count == 2, "\(listing.stdout)")
        let uploads = try Sandbox.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                       "\(bucket.endpoint)/\(bucket.name)?uploads"], in: box.root)
        #expect(uploads.status == 0 && !uploads.stdout.contains("<UploadId>"), "\(uploads.output)")
        let objects = try Sandbox.run(["python3", "-c", "import urllib.request,sys; print(urllib.request.urlopen(sys.argv[1]).read().decode())",
                                       "\(bucket.endpoint)/\(bucket.name)?list-type=2"], in: box.root)
        #expect(objects.stdout.components(separatedBy: "ckpt/model.bin</Key>").count == 2, "\(objects.stdout)")
        let download = try box.dstack(["artifacts", "download", run, "-o", box.root.appendingPathComponent("got").path], environment: env)
        #expect(download.status == 0, "\(download.output)")
        #expect(try Sandbox.run(["sha256sum", "-c", "sums.txt"], in: box.root.appendingPathComponent("got")).status == 0)
    }
}

/// Lines collected by a sampling thread, and the flag that stops it.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var collected: [String] = []
    private var done = false

    var lines: [String] { lock.withLock { collected } }
    var stopped: Bool { lock.withLock { done } }
    func append(_ line: String) { lock.withLock { collected.append(line) } }
    func stop() { lock.withLock { done = true } }
}
