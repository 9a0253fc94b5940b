@testable import DstackSSH

/// libFuzzer entry point: the input is a known_hosts file. Every host it could name is looked up and a key checked.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzKnownHosts(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let hosts = KnownHosts(contents: text, path: "/fuzz/known_hosts")
    let key: [UInt8] = [0, 0, 0, 11] + Array("ssh-ed25519".utf8) + [0, 0, 0, 32] + Array(repeating: 7, count: 32)
    for (host, port) in [("gpu-1", 22), ("127.0.0.2", 2222), ("Example.COM", 22), ("", 0)] {
        _ = hosts.verdict(host: host, port: port, keyType: "ssh-ed25519", key: key)
        _ = hosts.keyTypes(host: host, port: port)
    }
    for entry in hosts.entries { _ = HostKey.type(of: entry.key) }
    return 0
}
