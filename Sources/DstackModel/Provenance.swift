/// Who submitted a run, from which code and with which command: recorded in `run.json` so that anyone reading the
/// shared storage can tell where a run came from.
public struct Provenance: Sendable, Codable, Hashable {
    /// The user name that submitted the run.
    public var user: String
    /// The machine it was submitted from.
    public var host: String
    /// The git state of the project when it was submitted; nil outside a git work tree.
    public var git: GitState?
    /// The command line, as typed (secret values, should one be typed, masked as `***`).
    public var command: [String]
    /// The version of dstack that submitted it.
    public var dstackVersion: String

    /// Creates provenance.
    public init(user: String, host: String, git: GitState?, command: [String], dstackVersion: String) {
        self.user = user
        self.host = host
        self.git = git
        self.command = command
        self.dstackVersion = dstackVersion
    }

    /// `user@host`.
    public var submittedBy: String { "\(user)@\(host)" }
}

/// The state of a git work tree at one moment.
public struct GitState: Sendable, Codable, Hashable {
    /// The commit checked out (nil in a repository without commits yet).
    public var commit: String?
    /// The branch checked out (nil when the head is detached).
    public var branch: String?
    /// True when files differ from the commit (changed, added, removed, or untracked and not ignored).
    public var dirty: Bool
    /// The files that differ, as paths relative to the repository's top folder, sorted.
    public var changedFiles: [String]

    /// Creates a git state.
    public init(commit: String?, branch: String?, dirty: Bool, changedFiles: [String]) {
        self.commit = commit
        self.branch = branch
        self.dirty = dirty
        self.changedFiles = changedFiles
    }

    /// Reads `git status --porcelain=v2 --branch -z`: the `# branch.oid` and `# branch.head` headers, then one
    /// record per changed path (a rename's second record, its old path, counts as changed too).
    public static func parse(porcelainV2 output: String) -> GitState {
        var commit: String?
        var branch: String?
        var changed: Set<String> = []
        var records = output.split(separator: "\0", omittingEmptySubsequences: true)[...]
        while let record = records.popFirst() {
            if record.hasPrefix("# branch.oid ") {
                let oid = record.dropFirst("# branch.oid ".count)
                commit = oid == "(initial)" ? nil : String(oid)
            } else if record.hasPrefix("# branch.head ") {
                let head = record.dropFirst("# branch.head ".count)
                branch = head == "(detached)" ? nil : String(head)
            } else if record.hasPrefix("# ") {
                continue
            } else if record.hasPrefix("1 ") {
                if let path = field(record, after: 8) { changed.insert(path) }
            } else if record.hasPrefix("2 ") {
                if let path = field(record, after: 9) { changed.insert(path) }
                if let original = records.popFirst() { changed.insert(String(original)) }
            } else if record.hasPrefix("u ") {
                if let path = field(record, after: 10) { changed.insert(path) }
            } else if record.hasPrefix("? ") {
                changed.insert(String(record.dropFirst(2)))
            }
        }
        return GitState(commit: commit, branch: branch, dirty: !changed.isEmpty, changedFiles: changed.sorted())
    }

    /// The rest of `record` after `count` space-separated fields (a path may hold spaces).
    private static func field(_ record: Substring, after count: Int) -> String? {
        let parts = record.split(separator: " ", maxSplits: count, omittingEmptySubsequences: false)
        return parts.count == count + 1 ? String(parts[count]) : nil
    }
}
