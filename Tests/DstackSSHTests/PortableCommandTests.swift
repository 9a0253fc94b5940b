import Foundation
import Testing

@testable import DstackSSH

/// The one line dstack hands sshd for every command: the login shell runs it, whatever shell that is, and the
/// script itself arrives on standard input and runs under `/bin/sh`.
@Suite struct PortableCommandTests {
    /// The login shells a runner account may have; tcsh and fish are installed by scripts/test.
    static let shells = ["/bin/sh", "/bin/dash", "/bin/bash", "/usr/bin/zsh", "/usr/bin/tcsh", "/bin/csh", "/usr/bin/fish"]
        .filter { FileManager.default.isExecutableFile(atPath: $0) }

    /// Runs `line` as sshd would (`SHELL -c LINE`), with `stdin`.
    func runAsSSHDWould(_ shell: String, _ line: String, stdin: Data) throws -> (status: Int32, stdout: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: shell)
        process.arguments = ["-c", line]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let writer = Thread {
            input.fileHandleForWriting.write(stdin)
            try? input.fileHandleForWriting.close()
        }
        writer.start()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func tcshAndFishAreHereToBeTried() {
        #expect(Self.shells.contains("/usr/bin/tcsh"), "install tcsh (scripts/test does) to test runner accounts whose login shell is tcsh")
        #expect(Self.shells.contains("/usr/bin/fish"), "install fish (scripts/test does) to test runner accounts whose login shell is fish")
    }

    @Test(arguments: shells)
    func everyLoginShellRunsTheScriptUnderShAndLeavesTheRestOfStdinToIt(_ shell: String) throws {
        // A long script (200 kB: past what one command line may carry), quotes, a here-document, arguments with
        // spaces and dashes, then data the script's own command reads.
        let filler = String(repeating: "# \(String(repeating: "x", count: 98))\n", count: 2_000)
        let script = filler + """
        set -- 'a b' -n "it's"
        printf '%s|' "$#" "$1" "$2" "$3"
        cat <<'END'
        here-doc $1 kept
        END
        cat
        exit 7
        """
        let (line, bytes) = SSHSession.portable(script)
        #expect(line.utf8.count < 80, "one short line: \(line)")
        var stdin = bytes
        stdin.append(Data("rest of stdin\n".utf8))
        let result = try runAsSSHDWould(shell, line, stdin: stdin)
        #expect(result.status == 7, "\(shell)")
        #expect(result.stdout == "3|a b|-n|it's|here-doc $1 kept\nrest of stdin\n", "\(shell)")
    }
}
