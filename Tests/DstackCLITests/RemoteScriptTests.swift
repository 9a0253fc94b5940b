import Foundation
import Testing

@testable import DstackRunners

/// How runner scripts reach the remote shell: one command line, or stdin when the line would be too long.
@Suite struct RemoteScriptTests {
    /// Runs `command` as sshd would (the login shell's `-c`), with `stdin`.
    func runAsSSHDWould(_ command: String, stdin: Data?) throws -> (status: Int32, stdout: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        let writer = Thread {
            if let stdin { input.fileHandleForWriting.write(stdin) }
            try? input.fileHandleForWriting.close()
        }
        writer.start()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func aShortScriptIsOneCommandLine() throws {
        let (command, stdin) = SSHRunner.remoteScript("printf '%s\\n' \"$0\" \"$#\" \"$1\"", ["one arg", "-x"])
        #expect(stdin == nil)
        #expect(command == SSHRunner.commandLine("printf '%s\\n' \"$0\" \"$#\" \"$1\"", ["one arg", "-x"]))
        let result = try runAsSSHDWould(command, stdin: stdin)
        #expect(result.stdout == "dstack\n2\none arg\n")
    }

    /// Linux caps one argument at 128 KiB, and sshd hands the whole command line to the shell as one: a job with
    /// long commands or a large environment must not depend on it.
    @Test func aLongScriptAndItsArgumentsGoOnStdin() throws {
        let filler = String(repeating: "# \(String(repeating: "x", count: 98))\n", count: 2_000)  // 200 kB
        let text = filler + "printf '%s\\n' \"$0\" \"$#\" \"$1\" \"$2\" \"$3\"\ncat <<'END'\nhere-doc $1 kept\nEND\nexit 7\n"
        let (command, stdin) = SSHRunner.remoteScript(text, ["a b", "-n", "it's"])
        #expect(command.utf8.count < 100, "\(command)")
        #expect(stdin != nil)
        let result = try runAsSSHDWould(command, stdin: stdin)
        #expect(result.status == 7)
        #expect(result.stdout == "dstack\n3\na b\n-n\nit's\nhere-doc $1 kept\n")
        // The same text as one command line is refused by the kernel (E2BIG), as sshd's exec of the shell would be.
        #expect(throws: (any Error).self) { _ = try runAsSSHDWould(SSHRunner.commandLine(text, ["a b"]), stdin: nil) }
    }
}
