import Foundation

@testable import DstackRunners

/// libFuzzer entry point: the input is what a runner's agent shell wrote back (a runner is another machine, so its
/// answers are untrusted). The bytes are fed to the protocol's parser whole and again in pieces of every size the
/// first byte picks; both must end in replies or a wait for more, never a crash, a hang or unbounded memory.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAgentReply(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(bytes: data, count: size)
    var whole = AgentParser()
    let all = whole.feed(Data("dstack-agent ready 1\n".utf8) + bytes)
    var pieces = AgentParser()
    _ = pieces.feed(Data("dstack-agent ready 1\n".utf8))
    let step = max(1, Int(bytes.first ?? 1) % 17)
    var parts: [AgentReply] = []
    var i = 0
    while i < bytes.count {
        parts += pieces.feed(bytes.subdata(in: i..<min(bytes.count, i + step)))
        i += step
    }
    // The same bytes come to the same replies whatever pieces they arrive in.
    precondition(all.count == parts.count, "replies differ by how the bytes arrived")
    for reply in all { _ = reply.errorText }
    return 0
}
