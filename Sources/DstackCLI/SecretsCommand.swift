import ArgumentParser
import DstackCore
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension DstackCommand {
    struct Secrets: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keep the secrets jobs receive, on this machine only.",
            discussion: """
            A workflow names the secrets it needs ('secrets: [HF_TOKEN]'); each job receives them as environment \
            variables. Values are kept per project in ~/.dstack/secrets (mode 0600, or $DSTACK_SECRETS_FILE), never \
            in the shared storage, and are masked as *** in jobs' output.
            """,
            subcommands: [Add.self, List.self, Delete.self],
            defaultSubcommand: List.self
        )

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Set a secret (replacing it if it is set).",
                discussion: "The value is read from standard input (one trailing newline dropped), or asked for without echo on a terminal. It is never taken from the command line, where 'ps' and shell history would show it."
            )
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The secret's name, as the job's environment variable.") var name: String

            func run() async throws {
                let workspace = try global.workspace()
                try workspace.addSecret(name, value: try readSecretValue(prompt: "value of \(name): "))
                Terminal.info("secret '\(name)' set for project '\(workspace.projectName)' on this machine")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the names of this project's secrets (never their values).")
            @OptionGroup var global: GlobalOptions

            func run() async throws {
                let workspace = try global.workspace()
                let names = try workspace.secretNames()
                if names.isEmpty {
                    Terminal.info("no secrets for project '\(workspace.projectName)' on this machine; add one with 'dstack secrets add NAME'")
                    return
                }
                for name in names { Terminal.out(name) }
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a secret.")
            @OptionGroup var global: GlobalOptions
            @Argument(help: "The secret's name.") var name: String

            func run() async throws {
                let workspace = try global.workspace()
                try workspace.deleteSecret(name)
                Terminal.info("secret '\(name)' deleted from project '\(workspace.projectName)'")
            }
        }
    }
}

/// A secret's value: standard input up to its end (one trailing newline dropped), or, on a terminal, a line typed
/// at a prompt with echo turned off.
func readSecretValue(prompt: String) throws -> String {
    guard isatty(STDIN_FILENO) == 1 else {
        var text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        if text.hasSuffix("\r\n") { text.removeLast(2) } else if text.hasSuffix("\n") { text.removeLast() }
        return text
    }
    FileHandle.standardError.write(Data(prompt.utf8))
    var saved = termios()
    let canHide = tcgetattr(STDIN_FILENO, &saved) == 0
    if canHide {
        var quiet = saved
        quiet.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet)
    }
    defer {
        if canHide { tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved) }
        FileHandle.standardError.write(Data("\n".utf8))
    }
    return readLine(strippingNewline: true) ?? ""
}
