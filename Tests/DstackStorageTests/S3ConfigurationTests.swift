import Foundation
import Testing

@testable import DstackStorage

@Suite("S3 configuration: URL, credentials, region, endpoint")
struct S3ConfigurationTests {
    /// A home directory holding `credentials` and `config` under `.aws/`.
    func home(credentials: String? = nil, config: String? = nil, _ body: (URL) throws -> Void) throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("dstack-s3-home-\(UUID().uuidString)")
        let aws = home.appendingPathComponent(".aws")
        try FileManager.default.createDirectory(at: aws, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: home) }
        if let credentials { try credentials.write(to: aws.appendingPathComponent("credentials"), atomically: true, encoding: .utf8) }
        if let config { try config.write(to: aws.appendingPathComponent("config"), atomically: true, encoding: .utf8) }
        try body(home)
    }

    let keys = ["AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": "secret-env"]

    @Test("storage URLs", arguments: [
        ("s3://bucket", "bucket", ""), ("s3://bucket/", "bucket", ""), ("s3://bucket/team", "bucket", "team/"),
        ("s3://my.bucket/a/b/", "my.bucket", "a/b/"), ("s3://bucket//a//b", "bucket", "a/b/"),
    ])
    func urls(url: String, bucket: String, prefix: String) throws {
        let parsed = try S3Configuration.parse(url)
        #expect(parsed.bucket == bucket)
        #expect(parsed.keyPrefix == prefix)
    }

    @Test("URLs that are refused", arguments: ["/srv/dstack", "s3://", "s3:///prefix", "s3://Bad_Bucket!", "s3://b/../x"])
    func badURLs(url: String) {
        #expect(throws: StorageError.self) { try S3Configuration.parse(url) }
    }

    @Test("environment credentials and region win over the files")
    func environmentWins() throws {
        try home(
            credentials: "[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = secret-file\n",
            config: "[default]\nregion = eu-central-1\n"
        ) { home in
            let c = try S3Configuration(
                url: "s3://b", endpoint: nil,
                environment: keys.merging(["AWS_SESSION_TOKEN": "tok", "AWS_REGION": "ap-south-1"]) { $1 },
                homeDirectory: home)
            #expect(c.credentials == AWSCredentials(accessKeyId: "AKIDENV", secretAccessKey: "secret-env", sessionToken: "tok"))
            #expect(c.credentialSource == "$AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY")
            #expect(c.region == "ap-south-1")
            #expect(c.endpoint == nil)
            let d = try S3Configuration(
                url: "s3://b", endpoint: nil, environment: keys.merging(["AWS_DEFAULT_REGION": "us-west-2"]) { $1 },
                homeDirectory: home)
            #expect(d.region == "us-west-2")
        }
    }

    @Test("the profile named by AWS_PROFILE, from ~/.aws/credentials and [profile X] in ~/.aws/config")
    func profiles() throws {
        let credentials = """
            # comment
            [default]
            aws_access_key_id = AKIDDEFAULT
            aws_secret_access_key = secret-default

            [ci]
            aws_access_key_id=AKIDCI
            aws_secret_access_key=secret-ci
            aws_session_token = token-ci
            """
        let config = """
            [default]
            region = eu-west-3
            [profile ci]
            region = sa-east-1
            s3 =
              addressing_style = path
            """
        try home(credentials: credentials, config: config) { home in
            let ci = try S3Configuration(url: "s3://b", endpoint: nil, environment: ["AWS_PROFILE": "ci"], homeDirectory: home)
            #expect(ci.credentials == AWSCredentials(accessKeyId: "AKIDCI", secretAccessKey: "secret-ci", sessionToken: "token-ci"))
            #expect(ci.credentialSource == "profile 'ci' in \(home.path)/.aws/credentials")
            #expect(ci.region == "sa-east-1")
            let plain = try S3Configuration(url: "s3://b", endpoint: nil, environment: [:], homeDirectory: home)
            #expect(plain.credentials.accessKeyId == "AKIDDEFAULT")
            #expect(plain.region == "eu-west-3")
        }
    }

    @Test("credentials in ~/.aws/config, region defaulting to us-east-1")
    func configCredentials() throws {
        try home(config: "[profile dev]\naws_access_key_id = AKIDCONF\naws_secret_access_key = s\n") { home in
            let c = try S3Configuration(url: "s3://b", endpoint: nil, environment: ["AWS_PROFILE": "dev"], homeDirectory: home)
            #expect(c.credentials.accessKeyId == "AKIDCONF")
            #expect(c.region == "us-east-1")
        }
    }

    @Test("no credentials anywhere: says where they can come from")
    func noCredentials() throws {
        try home { home in
            #expect {
                try S3Configuration(url: "s3://b/p", endpoint: nil, environment: [:], homeDirectory: home)
            } throws: { error in
                "\(error)" == "storage 's3://b/p' is unusable: no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                    + "AWS_SECRET_ACCESS_KEY, or add aws_access_key_id and aws_secret_access_key to profile 'default' "
                    + "in \(home.path)/.aws/credentials (the profile comes from AWS_PROFILE)"
            }
        }
    }

    @Test("endpoint: the parameter, then $AWS_ENDPOINT_URL_S3, then $AWS_ENDPOINT_URL")
    func endpoint() throws {
        let both = keys.merging(["AWS_ENDPOINT_URL": "http://general:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2"]) { $1 }
        #expect(try S3Configuration(url: "s3://b", endpoint: "http://param:3", environment: both, homeDirectory: s3EmptyHome)
            .endpoint?.absoluteString == "http://param:3")
        #expect(try S3Configuration(url: "s3://b", endpoint: nil, environment: both, homeDirectory: s3EmptyHome)
            .endpoint?.absoluteString == "http://s3only:2")
        let general = keys.merging(["AWS_ENDPOINT_URL": "https://minio.lab:9000"]) { $1 }
        #expect(try S3Configuration(url: "s3://b", endpoint: "", environment: general, homeDirectory: s3EmptyHome)
            .endpoint?.absoluteString == "https://minio.lab:9000")
        #expect(throws: StorageError.self) {
            try S3Configuration(url: "s3://b", endpoint: "minio:9000", environment: keys, homeDirectory: s3EmptyHome)
        }
    }
}
