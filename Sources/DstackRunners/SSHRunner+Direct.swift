import DstackModel
import DstackSSH
import Foundation

extension SSHRunner: DirectTransferRunner {
    /// Parts (or files) a runner sends at once, as the coordinator's own uploads do.
    static let directJobs = 4

    public var sharedStoragePath: String? { config.storagePath }

    public func directReach(_ probeURL: String) async throws -> DirectReach {
        try await reaching {
            let probe = try await script(.transfer, ["tool"])
            let facts = Self.facts(probe.stdoutText)
            if probeURL.hasPrefix("/") {
                guard facts["hash"] == "1" else { return .unreachable("it lacks md5sum or sha256sum to check what it copies") }
                let reach = try await script(.transfer, ["reach", "cp"], stdin: Data((probeURL + "\n").utf8))
                guard Self.facts(reach.stdoutText)["reach"] == "200" else {
                    return .unreachable("its storage_path '\(config.storagePath ?? "")' does not hold this storage")
                }
                return .reachable(tool: "cp")
            }
            guard let tool = facts["tool"] else { return .unreachable("it has none of curl, wget (GNU) or python3") }
            guard facts["hash"] == "1" else { return .unreachable("it lacks md5sum or sha256sum to check what it sends") }
            let reach = try await script(.transfer, ["reach", tool], stdin: Data((probeURL + "\n").utf8))
            let status = Self.facts(reach.stdoutText)["reach"] ?? "000"
            switch status {
            case "000": return .unreachable("the bucket did not answer it (\(tool))")
            case "403": return .unreachable("the bucket refused its signed request (HTTP 403): check the clocks")
            default:
                guard status.hasPrefix("2") || status == "404" else { return .unreachable("the bucket answered HTTP \(status)") }
                return .reachable(tool: tool)
            }
        }
    }

    static func facts(_ text: String) -> [String: String] {
        var facts: [String: String] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix("K ") {
            let words = line.split(separator: " ", maxSplits: 2)
            if words.count == 3 { facts[String(words[1])] = String(words[2]) }
        }
        return facts
    }

    public func withSplitArtifacts<T: Sendable>(jobId: String, paths: [String], minimum: Int64,
                                                _ body: (URL, [RunnerFile]) async throws -> T) async throws -> T {
        var seen = Set<String>()
        let paths = paths.map(normalizedRelativePath).filter { seen.insert($0).inserted }
        let repo = jobDir(jobId) + "/repo"
        let exclude = jobDir(jobId) + "/.dstack-direct"
        let listing = try await surviving { try await script(.transfer, ["list", repo, String(minimum), exclude] + paths) }
        let large = Self.parseListing(listing.stdoutText)
        let gnuTar = Self.facts(listing.stdoutText)["gnutar"] == "1"
        guard !large.isEmpty else {
            return try await withArtifacts(jobId: jobId, paths: paths) { try await body($0, []) }
        }
        let staging = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-artifacts-\(jobId)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: staging) }
        let direct = Set(large.map(\.path))
        let tree = paths.filter { !direct.contains($0) }
        if !tree.isEmpty {
            // Only GNU tar lists large files inside folders, so only it is told to leave them out.
            let options = gnuTar ? "--anchored --no-wildcards --exclude-from=" + shellQuote(exclude) : ""
            try await surviving {
                try await connection.session().downloadTree(repo, paths: tree, to: staging.path, remoteOptions: options)
            }
        }
        return try await ArtifactStaging.$disposableFolder.withValue(staging) { try await body(staging, large) }
    }

    /// Reads `F MODE SIZE PATH` lines.
    static func parseListing(_ text: String) -> [RunnerFile] {
        text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", maxSplits: 3)
            guard fields.count == 4, fields[0] == "F", let mode = ArtifactEntry.permissions(fields[1]),
                  let size = Int64(fields[2]) else { return nil }
            return RunnerFile(path: String(fields[3]), size: size, mode: mode & 0o777)
        }
    }

    public func putDirect(jobId: String, _ files: [DirectPut], progress: @escaping @Sendable (Int64) -> Void) async throws -> [DirectPutResult] {
        var input = ""
        for (index, file) in files.enumerated() { input += "f \(index) \(file.path)\n" }
        for (index, file) in files.enumerated() {
            for (number, url) in file.urls.enumerated() {
                let offset = Int64(number) * file.partSize
                input += "p \(index) \(number + 1) \(offset) \(min(file.partSize, file.size - offset)) \(url)\n"
            }
        }
        let lines = try await transfer(["put", jobDir(jobId) + "/repo"], input: input, jobId: jobId,
                                       paths: files.first?.urls.first?.hasPrefix("/") == true, progress: progress)
        var hashes: [Int: String] = [:]
        var parts: [Int: [DirectPutResult.Part]] = [:]
        for line in lines {
            let words = line.split(separator: " ")
            if words.count == 3, words[0] == "h", let index = Int(words[1]) {
                hashes[index] = String(words[2])
            } else if words.count == 5, words[0] == "p", let index = Int(words[1]), let number = Int(words[2]) {
                parts[index, default: []].append(.init(number: number, md5: String(words[3]), etag: String(words[4])))
            }
        }
        return try files.enumerated().map { index, file in
            guard let sha256 = hashes[index] else {
                throw RunnerError.job(jobId: jobId, reason: "storing '\(file.path)' from \(name) failed: the runner did not say what it hashed to")
            }
            return DirectPutResult(path: file.path, sha256: sha256, parts: (parts[index] ?? []).sorted { $0.number < $1.number })
        }
    }

    public func getDirect(jobId: String, _ files: [DirectGet], progress: @escaping @Sendable (Int64) -> Void) async throws {
        guard !files.isEmpty else { return }
        let input = files.map { "g \($0.size) \(String($0.mode & 0o777, radix: 8)) \($0.sha256 ?? "-") \($0.url) \($0.path)\n" }.joined()
        _ = try await transfer(["get", jobDir(jobId) + ".deps"], input: input, jobId: jobId,
                               paths: files[0].url.hasPrefix("/"), progress: progress)
    }

    /// Runs `transfer.sh` with the orders on its standard input, handing `b BYTES` lines to `progress` as they come;
    /// returns its other lines, or throws the first `x` line's reason.
    /// With `paths`, the orders name paths in a storage directory the runner mounts, and `cp` moves the bytes.
    private func transfer(_ arguments: [String], input: String, jobId: String, paths: Bool,
                          progress: @escaping @Sendable (Int64) -> Void) async throws -> [String] {
        guard let tool = paths ? "cp" : try await directTool() else {
            throw RunnerError.job(jobId: jobId, reason: "\(name) has no tool to reach the bucket with any more")
        }
        let mode = arguments[0]
        let full = [mode, tool, arguments[1], String(Self.directJobs)]
        let pending = LockedValue(Data())
        let lines = LockedValue<[String]>([])
        let errors = LockedValue(Data())
        let text = Self.scriptText(.transfer, full)
        let result = try await reaching {
            try await connection.session().exec(text, stdin: Data(input.utf8), idleTimeout: .some(.seconds(900))) { stream, data in
                guard stream == .stdout else {
                    errors.set(errors.get() + data.prefix(4096))
                    return
                }
                var buffer = pending.get() + data
                while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer = Data(buffer[buffer.index(after: newline)...])
                    if line.hasPrefix("b "), let bytes = Int64(line.dropFirst(2)) {
                        progress(bytes)
                    } else {
                        lines.set(lines.get() + [line])
                    }
                }
                pending.set(buffer)
            }
        }
        let collected = lines.get()
        if let failed = collected.first(where: { $0.hasPrefix("x ") }) {
            let why = failed.split(separator: " ", maxSplits: 3).dropFirst(3).first.map(String.init) ?? failed
            throw RunnerError.job(jobId: jobId, reason: "\(mode == "put" ? "storing" : "fetching") artifacts directly on \(name) failed: \(why)")
        }
        guard result.succeeded else {
            let detail = String(decoding: errors.get(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw RunnerError.job(jobId: jobId, reason: "the transfer script on \(name) failed (\(result.statusDescription))\(detail.isEmpty ? "" : ": \(detail)")")
        }
        return collected
    }

    /// The tool the probe found (asked again: the probe's answer is not kept on the runner object).
    private func directTool() async throws -> String? {
        Self.facts(try await script(.transfer, ["tool"]).stdoutText)["tool"]
    }
}
