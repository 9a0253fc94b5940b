import DstackModel
import Foundation
import Testing

/// `SecretMasker`: every byte of a secret value in a job's output becomes part of one `***`, whatever the reads.
@Suite struct SecretMaskerTests {
    /// The masker's output for `chunks`, then its end.
    func masked(_ values: [String], _ chunks: [String]) -> String {
        var masker = SecretMasker(values)
        var out = Data()
        for chunk in chunks { out.append(masker.mask(Data(chunk.utf8))) }
        out.append(masker.finish())
        return String(decoding: out, as: UTF8.self)
    }

    @Test func everyOccurrenceIsReplaced() {
        #expect(masked(["hf_abc123"], ["token=hf_abc123 and again hf_abc123\n"]) == "token=*** and again ***\n")
        #expect(masked(["s3cr3t", "other-value"], ["a s3cr3t b other-value c\n"]) == "a *** b *** c\n")
        #expect(masked(["x1y2"], ["nothing to hide\n"]) == "nothing to hide\n")
    }

    @Test func adjacentOrOverlappingOccurrencesAreOneRun() {
        #expect(masked(["abab"], ["xabababy"]) == "x***y")
        #expect(masked(["abc", "cde"], ["-abcde-"]) == "-***-")
        #expect(masked(["tok"], ["toktok!"]) == "***!")
        // A short value inside a longer one hides the longer one's bytes that it covers only.
        #expect(masked(["bc"], ["abcd"]) == "a***d")
    }

    /// A value split across two reads (at every possible place) is still hidden; so is one spread over many reads.
    @Test func aValueSplitAcrossReadsIsHidden() {
        let value = "ghp_S3cretValue42"
        let text = "start \(value) middle \(value)\nend"
        let expected = "start *** middle ***\nend"
        for split in 0...text.utf8.count {
            let bytes = Array(text.utf8)
            let chunks = [String(decoding: bytes[..<split], as: UTF8.self), String(decoding: bytes[split...], as: UTF8.self)]
            #expect(masked([value], chunks) == expected, "split at \(split)")
        }
        #expect(masked([value], text.map { String($0) }) == expected)
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var chunks: [String] = []
            var rest = Substring(text)
            while !rest.isEmpty {
                let n = Int.random(in: 1...5, using: &generator)
                chunks.append(String(rest.prefix(n)))
                rest = rest.dropFirst(n)
            }
            #expect(masked([value, "middle"], chunks) == "start *** *** ***\nend", "\(chunks)")
        }
    }

    /// Only what could still be the start of a value is held back; the rest goes out at once.
    @Test func onlyAPossibleStartOfAValueIsHeldBack() {
        var masker = SecretMasker(["secret"])
        #expect(String(decoding: masker.mask(Data("hello sec".utf8)), as: UTF8.self) == "hello ")
        #expect(String(decoding: masker.mask(Data("ond line\n".utf8)), as: UTF8.self) == "second line\n")
        #expect(String(decoding: masker.mask(Data("the secre".utf8)), as: UTF8.self) == "the ")
        #expect(String(decoding: masker.mask(Data("t!".utf8)), as: UTF8.self) == "***!")
        #expect(String(decoding: masker.mask(Data("no s".utf8)), as: UTF8.self) == "no ")
        #expect(String(decoding: masker.finish(), as: UTF8.self) == "s")
        // Nothing held when no value can start at the end.
        var plain = SecretMasker(["secret"])
        #expect(String(decoding: plain.mask(Data("abc".utf8)), as: UTF8.self) == "abc")
    }

    /// What `mask` returned is never taken back: masking a longer stream from its start gives the earlier output
    /// as a prefix (a job followed again after a reconnect skips what was stored).
    @Test func outputIsAPrefixOfTheOutputForALongerStream() {
        let values = ["tok3n", "pa55"]
        let text = "a tok3n b pa55tok3n c tok"
        let whole = Data(masked(values, [text]).utf8)
        for split in 0...text.utf8.count {
            var masker = SecretMasker(values)
            let early = masker.mask(Data(Array(text.utf8)[..<split]))
            #expect(whole.starts(with: early), "split at \(split)")
        }
    }

    @Test func noSecretsPassEverythingThrough() {
        var masker = SecretMasker(["", ""])
        #expect(masker.isEmpty)
        #expect(masker.mask(Data("x".utf8)) == Data("x".utf8))
        #expect(SecretMasker.mask("dstack run train --token ab12", hiding: ["ab12"]) == "dstack run train --token ***")
    }
}

/// Secret values never show when printed, dumped or logged; names that look like credentials are recognised.
@Suite struct SecretValuesTests {
    @Test func printingOrDumpingShowsNamesOnly() {
        let secrets = SecretValues(["HF_TOKEN": "hf_value_123", "WANDB_API_KEY": "wandb_value_456"])
        #expect("\(secrets)" == "[HF_TOKEN: ***, WANDB_API_KEY: ***]")
        #expect(String(reflecting: secrets) == "[HF_TOKEN: ***, WANDB_API_KEY: ***]")
        var dumped = ""
        dump(secrets, to: &dumped)
        #expect(!dumped.contains("hf_value_123") && !dumped.contains("wandb_value_456"), "\(dumped)")
        #expect(secrets.names == ["HF_TOKEN", "WANDB_API_KEY"])
        #expect(secrets.values == ["hf_value_123", "wandb_value_456"])
    }

    @Test(arguments: [("HF_TOKEN", true), ("WANDB_API_KEY", true), ("aws_secret", true), ("DB_PASSWORD", true),
                      ("PASSWORD_FILE", true), ("token", true), ("TOKENIZER", false), ("KEYS", false),
                      ("WANDB_MODE", false), ("MONKEY", false)])
    func credentialLikeNames(name: String, looksSecret: Bool) {
        #expect(looksLikeSecretName(name) == looksSecret)
    }
}

/// `secrets:` in a workflow: names only, checked when the files load.
@Suite struct SecretsKeyTests {
    @Test func aWorkflowListsTheSecretsItNeeds() throws {
        let project = try #require(loaded("""
            workflows:
              - name: train
                secrets: [WANDB_API_KEY, HF_TOKEN]
                commands: [python train.py]

            """))
        #expect(project.workflow(named: "train")?.secrets.map(\.value) == ["WANDB_API_KEY", "HF_TOKEN"])
    }

    @Test func badNamesDuplicatesAndEnvironmentClashesAreErrors() {
        #expect(diagnostics("""
            workflows:
              - name: train
                environment: {HF_TOKEN: abc}
                secrets: [hf-token, WANDB_API_KEY, WANDB_API_KEY, HF_TOKEN]
                commands: [x]

            """) == """
            .dstack/workflows.yaml:4:15: error: secret name 'hf-token' is not a valid environment variable name (letters, digits and '_', not starting with a digit)
                secrets: [hf-token, WANDB_API_KEY, WANDB_API_KEY, HF_TOKEN]
                          ^
            .dstack/workflows.yaml:4:40: error: secret 'WANDB_API_KEY' is listed twice
                secrets: [hf-token, WANDB_API_KEY, WANDB_API_KEY, HF_TOKEN]
                                                   ^
            .dstack/workflows.yaml:4:55: error: 'HF_TOKEN' is both a secret and an 'environment' entry; remove it from 'environment' (its value would be stored)
                secrets: [hf-token, WANDB_API_KEY, WANDB_API_KEY, HF_TOKEN]
                                                                  ^
            """)
    }
}

/// Provenance: what `git status --porcelain=v2 --branch -z` says about the work tree.
@Suite struct GitStateTests {
    @Test func aDirtyTreeOnABranch() {
        let output = [
            "# branch.oid 3f2a9c1d0e1234567890abcdef1234567890abcd", "# branch.head main", "# branch.upstream origin/main",
            "1 .M N... 100644 100644 100644 aaaa bbbb src/train.py",
            "1 A. N... 000000 100644 100644 0000 cccc file with spaces.txt",
            "2 R. N... 100644 100644 100644 dddd dddd R100 new name.py", "old name.py",
            "u UU N... 100644 100644 100644 100644 eeee ffff 0000 conflict.txt",
            "? notes.md",
        ].joined(separator: "\0") + "\0"
        let state = GitState.parse(porcelainV2: output)
        #expect(state == GitState(commit: "3f2a9c1d0e1234567890abcdef1234567890abcd", branch: "main", dirty: true,
                                  changedFiles: ["conflict.txt", "file with spaces.txt", "new name.py", "notes.md",
                                                 "old name.py", "src/train.py"]))
    }

    @Test func aCleanDetachedHeadAndAnEmptyRepository() {
        #expect(GitState.parse(porcelainV2: "# branch.oid 0123abcd\0# branch.head (detached)\0")
                == GitState(commit: "0123abcd", branch: nil, dirty: false, changedFiles: []))
        #expect(GitState.parse(porcelainV2: "# branch.oid (initial)\0# branch.head main\0")
                == GitState(commit: nil, branch: "main", dirty: false, changedFiles: []))
    }
}
