/// What a job started on this machine inherits from the coordinator's own environment.
///
/// A local job runs as the user, but it runs the commands of anyone who can commit to the repository: it gets
/// the user's environment without the credentials that dstack itself uses (storage keys, the SSH passphrase).
/// A workflow that needs one names it in its `environment:`.
public enum InheritedEnvironment {
    /// The variables withheld from jobs.
    public static let withheld: Set<String> = [
        "DSTACK_SSH_PASSPHRASE",
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    ]

    /// `environment` without the withheld variables.
    public static func forJobs(_ environment: [String: String]) -> [String: String] {
        environment.filter { !withheld.contains($0.key) }
    }
}
