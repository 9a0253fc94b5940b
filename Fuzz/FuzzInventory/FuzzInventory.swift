import DstackModel
import DstackYAML

/// libFuzzer entry point: the input is a hosts inventory. Parsing ends in an inventory or a `ConfigError`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzInventory(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? Inventory.parse(SourceFile(displayName: "hosts.yaml", text: text))
    return 0
}
