import Foundation
import Testing
@testable import DstackSSH

@Suite("shellQuote")
struct ShellQuoteTests {
    @Test("safe words stay as they are")
    func safe() {
        #expect(shellQuote("checkpoints/model-1.pt") == "checkpoints/model-1.pt")
        #expect(shellQuote("a=b,c:d@e%f+g") == "a=b,c:d@e%f+g")
    }

    @Test("everything else is single-quoted, with quotes escaped")
    func quoted() {
        #expect(shellQuote("") == "''")
        #expect(shellQuote("a b") == "'a b'")
        #expect(shellQuote("it's") == "'it'\\''s'")
        #expect(shellQuote("$(rm -rf /)") == "'$(rm -rf /)'")
    }

    static let hostile = [
        "plain", "", "with space", "it's", "''", "'\"'", "$(touch pwned)", "`touch pwned`", "a; touch pwned", "*",
        "~", "line1\nline2", "tab\there", "$HOME", "${HOME}", "back\\slash", "-n", "a|b&c>d<e", "!event", "#comment",
        "ünïcødé ✓",
    ]

    @Test("a real /bin/sh reads every quoted word back unchanged and runs nothing", arguments: hostile)
    func roundTrip(word: String) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("quote-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let output = try await shell("cd \(folder.path) && printf '%s' \(shellQuote(word))")
        #expect(output == word)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty, "nothing was executed")
    }
}
