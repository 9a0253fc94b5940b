import DstackModel
import Testing

/// ~/.ssh/config as OpenSSH reads it: blocks, patterns, first value wins, IdentityFile accumulates.
@Suite("ssh_config")
struct SSHConfigTests {
    func config(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) -> SSHConfig? {
        do {
            return try SSHConfig.parse(text: text)
        } catch {
            Issue.record("expected the config to parse:\n\(error)", sourceLocation: sourceLocation)
            return nil
        }
    }

    /// The whole rendered error for a config that must not parse; records an issue (and returns "") when it does.
    func failure(_ text: String, displayName: String = "~/.ssh/config",
                 sourceLocation: SourceLocation = #_sourceLocation) -> String {
        do {
            _ = try SSHConfig.parse(text: text, displayName: displayName)
            Issue.record("expected a configuration error", sourceLocation: sourceLocation)
            return ""
        } catch {
            return error.description
        }
    }

    @Test("the first value obtained wins, across every matching block in file order")
    func firstValueWins() throws {
        let c = try #require(config("""
            Host gpu-*
              User first
            Host gpu-1
              User second
              HostName 10.0.0.11
              Port 2201
            Host *
              User fallback
              Port 22
              HostName never.example

            """))
        #expect(c.resolve(host: "gpu-1") == SSHHostConfig(hostName: "10.0.0.11", user: "first", port: 2201))
        #expect(c.resolve(host: "gpu-2") == SSHHostConfig(hostName: "never.example", user: "first", port: 22))
    }

    @Test("a trailing 'Host *' supplies defaults, and settings before the first 'Host' apply everywhere")
    func defaultsBlocks() throws {
        let c = try #require(config("""
            User global
            Host lab
              HostName lab.example
              Port 2222
            Host *
              Port 22
              User ignored

            """))
        #expect(c.resolve(host: "lab") == SSHHostConfig(hostName: "lab.example", user: "global", port: 2222))
        #expect(c.resolve(host: "elsewhere") == SSHHostConfig(user: "global", port: 22))
    }

    @Test("patterns: several per line, '*' and '?', '!' negation, case-insensitive", arguments: [
        ("web1", "web"), ("web12", "star"), ("db.lab", "star"), ("bastion.lab", "default"),
        ("WEB1", "web"), ("other", "default"), ("a.lab.b", "default"),
    ])
    func patterns(host: String, user: String) throws {
        let c = try #require(config("""
            Host web? WEB-*
              User web
            Host *.lab web* !bastion.lab
              User star
            Host !nothing-matches-only-negated
              User negated-only
            Host *
              User default

            """))
        #expect(c.resolve(host: host).user == user)
    }

    @Test("IdentityFile accumulates over every matching block, in order, without repeats")
    func identityFilesAccumulate() throws {
        let c = try #require(config("""
            IdentityFile ~/.ssh/global
            Host gpu-1
              IdentityFile ~/.ssh/gpu
              IdentityFile ~/.ssh/global
            Host *
              IdentityFile ~/.ssh/id_%r@%h

            """))
        #expect(c.resolve(host: "gpu-1").identityFiles == ["~/.ssh/global", "~/.ssh/gpu", "~/.ssh/id_%r@%h"])
        #expect(c.resolve(host: "x").identityFiles == ["~/.ssh/global", "~/.ssh/id_%r@%h"])
    }

    @Test("identity files expand a leading '~' and the % tokens OpenSSH defines")
    func identityFileExpansion() throws {
        let c = try #require(config("""
            Host lab
              HostName 10.1.0.5
              IdentityFile ~/.ssh/%r@%h:%p
              IdentityFile %d/keys/%n-%u
              IdentityFile /keys/100%%-%C
              IdentityFile ~
              IdentityFile ~bob/key

            """))
        let expansion = SSHExpansion(alias: "lab", hostName: "10.1.0.5", remoteUser: "ml", localUser: "me",
                                     port: 2222, home: "/home/me")
        #expect(c.resolve(host: "lab").expandedIdentityFiles(expansion) == [
            "/home/me/.ssh/ml@10.1.0.5:2222", "/home/me/keys/lab-me", "/keys/100%-%C", "/home/me", "~bob/key",
        ])
        var slashed = expansion
        slashed.home = "/home/me/"
        #expect(slashed.expandPath("~/.ssh/id") == "/home/me/.ssh/id")
        #expect(slashed.expandPath("~") == "/home/me")
    }

    @Test("HostName expands %h to the alias and %% to '%'")
    func hostNameTokens() throws {
        let c = try #require(config("Host *.short\n  HostName %h.example.com\n"))
        #expect(c.resolve(host: "gpu.short").hostName == "gpu.short.example.com")
    }

    @Test("keywords ignore case; 'Key value', 'Key=value' and 'Key = value' are the same")
    func keywordForms() throws {
        let c = try #require(config("""
            host=a
              HOSTNAME=10.0.0.1
              user = ml
              PoRt =2200
            Host\tb
            \tHostName\t10.0.0.2
            \tIdentityFile= ~/.ssh/b

            """))
        #expect(c.resolve(host: "a") == SSHHostConfig(hostName: "10.0.0.1", user: "ml", port: 2200))
        #expect(c.resolve(host: "b") == SSHHostConfig(hostName: "10.0.0.2", identityFiles: ["~/.ssh/b"]))
    }

    @Test("quoted values keep their spaces; comments are dropped; CRLF lines read like LF")
    func quotingAndComments() throws {
        let c = try #require(config("""
            # a comment line\r
            Host "my box" other # trailing comment\r
              IdentityFile "~/My Keys/id one" # why\r
              User 'al ice'\r
            Host third\r
              IdentityFile ~/with\\ space\r
              HostName "quote\\"d"\r

            """))
        #expect(c.resolve(host: "my box") == SSHHostConfig(user: "al ice", identityFiles: ["~/My Keys/id one"]))
        #expect(c.resolve(host: "other").user == "al ice")
        #expect(c.resolve(host: "third") == SSHHostConfig(hostName: "quote\"d", identityFiles: ["~/with space"]))
    }

    @Test("Match exec never matches in the built-in parser; Include without a reader is ignored")
    func matchAndInclude() throws {
        let c = try #require(config("""
            Include ~/.ssh/config.d/*
            Match host lab exec "true"
              User from-match
              ProxyJump bastion
            Host lab
              User from-host

            """))
        #expect(c.resolve(host: "lab") == SSHHostConfig(user: "from-host"))
    }

    @Test("Include runs the reader per argument; the included file starts in the including block's state")
    func includeReader() throws {
        let files = ["a": "Port 1\nHost *\n  User from-a\n", "b": "ProxyJump jump\n"]
        let c = try SSHConfig.parse(text: "Host lab\n  Include a b\nHost *\n  User tail\n") { (name: String) throws(ConfigError) in
            files[name].map { [SSHConfig.IncludedFile(displayName: name, text: $0)] } ?? []
        }
        #expect(c.resolve(host: "lab") == SSHHostConfig(user: "from-a", port: 1, proxyJump: "jump"))
        #expect(c.resolve(host: "other") == SSHHostConfig(user: "tail"))
    }

    @Test("Match criteria ssh refuses are errors")
    func badMatch() {
        #expect(throws: ConfigError.self) { try SSHConfig.parse(text: "Match colour blue\n") }
        #expect(throws: ConfigError.self) { try SSHConfig.parse(text: "Match host\n") }
        #expect(throws: ConfigError.self) { try SSHConfig.parse(text: "Match all host x\n") }
    }

    @Test("Match host, originalhost, user and negation")
    func match() throws {
        let c = try #require(config("""
            Host s
              HostName real.s
            Match host real.* !originalhost t
              User matched
            Match !user matched
              Port 2

            """))
        #expect(c.resolve(host: "s", localUser: "me") == SSHHostConfig(hostName: "real.s", user: "matched"))
        #expect(c.resolve(host: "real.x", localUser: "me") == SSHHostConfig(user: "matched"))
        #expect(c.resolve(host: "t", localUser: "me") == SSHHostConfig(port: 2))
    }

    @Test("ProxyJump and ProxyCommand: the first wins, except that ProxyJump none leaves a later ProxyCommand")
    func proxies() throws {
        let c = try #require(config("""
            Host jumped
              ProxyJump ml@bastion:2200,inner
            Host commanded
              ProxyCommand ssh -W %h:%p bastion
            Host direct
              ProxyJump none
            Host *
              ProxyJump fallback
              ProxyCommand nc %h %p

            """))
        #expect(c.resolve(host: "jumped") == SSHHostConfig(proxyJump: "ml@bastion:2200,inner"))
        #expect(c.resolve(host: "commanded") == SSHHostConfig(proxyCommand: "ssh -W %h:%p bastion"))
        #expect(c.resolve(host: "direct") == SSHHostConfig(proxyCommand: "nc %h %p"), "ProxyJump none leaves a later ProxyCommand, as ssh 9 does")
        #expect(c.resolve(host: "any") == SSHHostConfig(proxyJump: "fallback"))
    }

    @Test("an empty config, or one with only comments, says nothing about any host")
    func empty() throws {
        #expect(try #require(config("")).resolve(host: "x") == SSHHostConfig())
        #expect(try #require(config("# nothing\n\n   \n")).resolve(host: "x") == SSHHostConfig())
    }

    @Test("lines ssh itself refuses are errors, all reported, each with its line and a caret")
    func errors() {
        let text = """
            Host lab
              Port ssh
              IdentityFile "~/unclosed
              User
              HostName 'x
              =value
              Port 70000

            """
        #expect(failure(text) == """
            ~/.ssh/config:2:8: error: 'Port' must be a number from 1 to 65535, got 'ssh'
              Port ssh
                   ^
            ~/.ssh/config:3:16: error: unclosed quote: this value has no closing '"'
              IdentityFile "~/unclosed
                           ^
            ~/.ssh/config:4:3: error: 'User' has no value; give one after it or remove the line
              User
              ^
            ~/.ssh/config:5:12: error: unclosed quote: this value has no closing "'"
              HostName 'x
                       ^
            ~/.ssh/config:6:3: error: a line must start with a keyword ('Keyword value' or 'Keyword=value')
              =value
              ^
            ~/.ssh/config:7:8: error: 'Port' must be a number from 1 to 65535, got '70000'
              Port 70000
                   ^
            """)
    }

    @Test("the file's name in errors is the one given")
    func displayName() {
        #expect(failure("Port 0\n", displayName: "/etc/ssh/ssh_config") == """
            /etc/ssh/ssh_config:1:6: error: 'Port' must be a number from 1 to 65535, got '0'
            Port 0
                 ^
            """)
    }
}
