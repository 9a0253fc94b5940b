import Foundation

/// Where an `s3://bucket/prefix` storage lives and how to reach it, resolved the way the AWS CLI does.
struct S3Configuration: Sendable {
    /// The storage URL as the user wrote it, for messages.
    var location: String
    /// The bucket name.
    var bucket: String
    /// The key prefix under which this storage keeps its objects: empty, or ending with `/`.
    var keyPrefix: String
    /// Who signs the requests.
    var credentials: AWSCredentials
    /// Where the credentials came from, in words (`$AWS_ACCESS_KEY_ID`, `profile 'ci' in ~/.aws/credentials`).
    var credentialSource: String
    /// The signing region.
    var region: String
    /// An endpoint override (MinIO, moto, ...), addressed path-style; nil for AWS itself.
    var endpoint: URL?

    /// Resolves everything from the URL, an explicit endpoint, the environment and the AWS files under `home`.
    init(url: String, endpoint: String?, environment: [String: String], homeDirectory: URL) throws {
        location = url
        (bucket, keyPrefix) = try Self.parse(url)

        let profile = environment.nonEmpty("AWS_PROFILE") ?? "default"
        let credentialsFile = environment.nonEmpty("AWS_SHARED_CREDENTIALS_FILE").map(URL.init(fileURLWithPath:))
            ?? homeDirectory.appendingPathComponent(".aws/credentials")
        let configFile = environment.nonEmpty("AWS_CONFIG_FILE").map(URL.init(fileURLWithPath:))
            ?? homeDirectory.appendingPathComponent(".aws/config")
        // In ~/.aws/config every profile but the default one is written `[profile NAME]`.
        let configSection = profile == "default" ? "default" : "profile \(profile)"
        let config = INIFile(contentsOf: configFile)
        let profileConfig = config?.sections[configSection] ?? config?.sections["profile \(profile)"] ?? [:]

        if let id = environment.nonEmpty("AWS_ACCESS_KEY_ID"), let secret = environment.nonEmpty("AWS_SECRET_ACCESS_KEY") {
            credentials = AWSCredentials(
                accessKeyId: id, secretAccessKey: secret, sessionToken: environment.nonEmpty("AWS_SESSION_TOKEN"))
            credentialSource = "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY"
        } else if let found = Self.credentials(in: INIFile(contentsOf: credentialsFile)?.sections[profile]) {
            credentials = found
            credentialSource = "profile '\(profile)' in \(credentialsFile.path)"
        } else if let found = Self.credentials(in: profileConfig) {
            credentials = found
            credentialSource = "profile '\(profile)' in \(configFile.path)"
        } else {
            throw StorageError.unusable(
                location: url,
                reason: "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add "
                    + "aws_access_key_id and aws_secret_access_key to profile '\(profile)' in \(credentialsFile.path) "
                    + "(the profile comes from AWS_PROFILE)")
        }

        region = environment.nonEmpty("AWS_REGION") ?? environment.nonEmpty("AWS_DEFAULT_REGION")
            ?? profileConfig.nonEmpty("region") ?? "us-east-1"

        let endpointText = endpoint.flatMap { $0.isEmpty ? nil : $0 }
            ?? environment.nonEmpty("AWS_ENDPOINT_URL_S3") ?? environment.nonEmpty("AWS_ENDPOINT_URL")
            ?? profileConfig.nonEmpty("endpoint_url")
        if let endpointText {
            guard let parsed = URL(string: endpointText), let scheme = parsed.scheme?.lowercased(),
                scheme == "http" || scheme == "https", parsed.host != nil
            else {
                throw StorageError.unusable(
                    location: url, reason: "the S3 endpoint '\(endpointText)' is not an http:// or https:// URL")
            }
            self.endpoint = parsed
        } else {
            self.endpoint = nil
        }
    }

    /// Splits `s3://bucket/some/prefix` into the bucket and `some/prefix/`.
    static func parse(_ url: String) throws -> (bucket: String, keyPrefix: String) {
        guard url.hasPrefix("s3://") else {
            throw StorageError.unusable(location: url, reason: "not an s3://bucket/prefix URL")
        }
        let rest = url.dropFirst("s3://".count)
        let bucket = String(rest.prefix { $0 != "/" })
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-_")
        guard !bucket.isEmpty, bucket.allSatisfy({ allowed.contains($0) }) else {
            throw StorageError.unusable(
                location: url,
                reason: "'\(bucket)' is not a valid bucket name (lower-case letters, digits, '.', '-' only)")
        }
        let segments = rest.dropFirst(bucket.count).split(separator: "/")
        if segments.contains(where: { $0 == "." || $0 == ".." }) {
            throw StorageError.unusable(location: url, reason: "the prefix may not contain '.' or '..' segments")
        }
        return (bucket, segments.isEmpty ? "" : segments.joined(separator: "/") + "/")
    }

    private static func credentials(in section: [String: String]?) -> AWSCredentials? {
        guard let section, let id = section.nonEmpty("aws_access_key_id"),
            let secret = section.nonEmpty("aws_secret_access_key")
        else { return nil }
        return AWSCredentials(accessKeyId: id, secretAccessKey: secret, sessionToken: section.nonEmpty("aws_session_token"))
    }
}

/// The subset of the INI dialect that `~/.aws/credentials` and `~/.aws/config` use.
struct INIFile: Sendable {
    /// Keys and values by section name; nested blocks (indented lines under `s3 =`) are skipped.
    var sections: [String: [String: String]] = [:]

    /// Reads `url`; nil when it does not exist or cannot be read.
    init?(contentsOf url: URL) {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return nil }
        self.init(text: text)
    }

    /// Parses `text`.
    init(text: String) {
        var current: String?
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: \.isNewline) {
            // Indented lines continue a nested block (`s3 =` then `  addressing_style = path`).
            if rawLine.first == " " || rawLine.first == "\t" { continue }
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("["), line.hasSuffix("]") {
                let name = line.dropFirst().dropLast().split(whereSeparator: \.isWhitespace).joined(separator: " ")
                current = name
                sections[name, default: [:]] = sections[name] ?? [:]
                continue
            }
            guard let current, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            sections[current, default: [:]][key] = value
        }
    }
}

extension Dictionary where Key == String, Value == String {
    /// The value for `key` unless it is missing or empty.
    fileprivate func nonEmpty(_ key: String) -> String? {
        guard let value = self[key], !value.isEmpty else { return nil }
        return value
    }
}
