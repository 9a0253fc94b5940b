import DstackModel

/// libFuzzer entry point: the input is an `~/.ssh/config`. Parsing ends in a configuration or a `ConfigError`;
/// a parsed one is asked for the settings of a few host names.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSSHConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let config = try? SSHConfig.parse(text: text) else { return 0 }
    for host in ["gpu-1", "lab-gpu-2", "10.0.0.11", "*", ""] { _ = config.resolve(host: host) }
    return 0
}
