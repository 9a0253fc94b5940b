import DstackModel
import Testing

/// The small parsers behind the schema: relative paths, byte sizes, and `.dstack/config.yaml`.
@Suite("paths, sizes and config.yaml")
struct PathsAndSizesTests {
    @Test("relativePathProblem accepts paths inside the repository and explains the rest", arguments: [
        ("data", nil), ("a/b/c", nil), ("a/../b", nil), ("./a", nil), ("a/./b/", nil), (".", nil),
        ("a/b/../..", nil),
        ("", "is empty"), ("/data", "is absolute"), ("~/data", "is absolute"),
        ("..", "escapes the repository with '..'"), ("../x", "escapes the repository with '..'"),
        ("a/../../x", "escapes the repository with '..'"), ("a/b/../../../c", "escapes the repository with '..'"),
    ] as [(String, String?)])
    func relativePaths(path: String, problem: String?) {
        #expect(relativePathProblem(path) == problem)
    }

    @Test("normalizedRelativePath drops '.', empty parts, trailing slashes and resolves '..'", arguments: [
        ("data", "data"), ("./a//b/", "a/b"), ("a/../b", "b"), ("a/./b/../c", "a/c"), (".", ""), ("a/..", ""),
    ])
    func normalizing(path: String, normalized: String) {
        #expect(normalizedRelativePath(path) == normalized)
    }

    @Test("parseByteSize reads sizes in powers of 1024", arguments: [
        ("16GB", 16 << 30), ("512MB", 512 << 20), ("1.5GiB", 3 << 29), ("2048", 2048), ("40 GB", 40 << 30),
        ("1k", 1024), ("2T", 2 << 40), ("0", 0), ("7B", 7), (" 3mib ", 3 << 20),
    ] as [(String, Int64)])
    func sizes(text: String, bytes: Int64) {
        #expect(parseByteSize(text) == bytes)
    }

    @Test("parseByteSize refuses what is no size, without trapping", arguments: [
        "", "GB", "lots", "16 parsecs", "-1GB", "-5", "1.5", "inf GB", "nanGB", "1e30GB", "99999999999999999999",
    ])
    func badSizes(text: String) {
        #expect(parseByteSize(text) == nil)
    }

    @Test("config.yaml reads its four keys")
    func config() throws {
        let config = try ProjectConfig.parse(SourceFile(displayName: ".dstack/config.yaml", text: """
            project: my-model
            storage: s3://bucket/runs
            endpoint: http://127.0.0.1:9000
            region: eu-west-1

            """))
        #expect(config == ProjectConfig(project: "my-model", storage: "s3://bucket/runs",
                                        endpoint: "http://127.0.0.1:9000", region: "eu-west-1"))
        #expect(try ProjectConfig.parse(SourceFile(displayName: "c", text: "")) == ProjectConfig())
    }

    @Test("config.yaml refuses unknown keys and bad project names")
    func configErrors() {
        let source = SourceFile(displayName: ".dstack/config.yaml", text: "projcet: x\nstorage: [a]\nproject: ../up\n")
        #expect {
            try ProjectConfig.parse(source)
        } throws: { error in
            (error as? ConfigError)?.description == """
                .dstack/config.yaml:1:1: error: unknown key 'projcet' in config.yaml (did you mean 'project'?)
                projcet: x
                ^
                .dstack/config.yaml:2:10: error: 'storage' must be a string, got a list
                storage: [a]
                         ^
                .dstack/config.yaml:3:10: error: project name '../up' must hold only letters, digits, '.', '_' and '-'
                project: ../up
                         ^
                """
        }
    }
}
