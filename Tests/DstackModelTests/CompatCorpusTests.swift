import DstackModel
import Foundation
import Testing

/// `.dstack/` files in the shapes early dstack's users wrote from January to August 2022 (Fixtures/compat, one
/// folder per shape: `workflows.yaml`, maybe `variables.yaml`, and `expect`). Each must load, or fail with an error
/// that names every key (or provider) its `expect` lists after `fails`.
@Suite("early dstack files")
struct CompatCorpusTests {
    static let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/compat")

    static var shapes: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).sorted()
    }

    @Test("the corpus holds every shape of the examples repository's history")
    func corpusIsComplete() {
        #expect(Self.shapes.count >= 17)
        for month in ["2022-01", "2022-02", "2022-03", "2022-04", "2022-05", "2022-07", "2022-08"] {
            #expect(Self.shapes.contains { $0.hasPrefix(month) }, "no shape from \(month)")
        }
    }

    @Test("each shape loads, or fails naming what is not supported", arguments: shapes)
    func shape(name: String) throws {
        let dir = Self.folder.appendingPathComponent(name)
        let workflows = try String(contentsOf: dir.appendingPathComponent("workflows.yaml"), encoding: .utf8)
        let variables = try? String(contentsOf: dir.appendingPathComponent("variables.yaml"), encoding: .utf8)
        let expect = try String(contentsOf: dir.appendingPathComponent("expect"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        switch expect.first {
        case "loads":
            let project = loaded(workflows, variables: variables)
            #expect(project?.workflows.isEmpty == false)
        case "fails":
            let error = diagnostics(workflows, variables: variables)
            for key in expect.dropFirst() {
                #expect(error.contains("'\(key)'"), "the error does not name '\(key)':\n\(error)")
            }
            #expect(error.contains("error: "))
        default:
            Issue.record("\(name)/expect must start with 'loads' or 'fails'")
        }
    }
}
