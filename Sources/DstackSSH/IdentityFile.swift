import Foundation

/// What can be learned about a private key file without decrypting it: its key type and whether it is encrypted.
struct IdentityFile: Equatable {
    /// The key type (`ssh-ed25519`, `ssh-rsa`...), when it can be told.
    var keyType: String?
    /// Whether the key needs a passphrase.
    var isEncrypted: Bool

    /// Inspects the key at `path` (and `path.pub` when present); nil when the file cannot be read.
    static func inspect(path: String) -> IdentityFile? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        var info = inspect(privateKey: text)
        if let pub = try? String(contentsOfFile: path + ".pub", encoding: .utf8),
           let type = pub.split(separator: " ").first {
            info.keyType = String(type)
        }
        return info
    }

    /// Inspects the text of a private key in OpenSSH (`openssh-key-v1`) or PEM format.
    static func inspect(privateKey text: String) -> IdentityFile {
        if text.contains("BEGIN OPENSSH PRIVATE KEY") {
            let body = text.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
            guard let data = Data(base64Encoded: body) else { return IdentityFile(keyType: nil, isEncrypted: false) }
            var reader = BlobReader(bytes: Array(data))
            guard reader.readMagic("openssh-key-v1\0"), let cipher = reader.readString(),
                  reader.readString() != nil, reader.readString() != nil, reader.readUInt32() != nil,
                  let publicKey = reader.readString()
            else { return IdentityFile(keyType: nil, isEncrypted: false) }
            return IdentityFile(
                keyType: HostKey.type(of: publicKey), isEncrypted: String(decoding: cipher, as: UTF8.self) != "none")
        }
        let encrypted = text.contains("ENCRYPTED")
        if text.contains("BEGIN RSA PRIVATE KEY") { return IdentityFile(keyType: "ssh-rsa", isEncrypted: encrypted) }
        if text.contains("BEGIN EC PRIVATE KEY") { return IdentityFile(keyType: "ecdsa", isEncrypted: encrypted) }
        if text.contains("BEGIN DSA PRIVATE KEY") { return IdentityFile(keyType: "ssh-dss", isEncrypted: encrypted) }
        return IdentityFile(keyType: nil, isEncrypted: encrypted)
    }
}

/// Reads SSH wire-format fields (uint32 lengths, strings) from a byte array.
struct BlobReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// Consumes `magic` if the bytes start with it.
    mutating func readMagic(_ magic: String) -> Bool {
        let expected = Array(magic.utf8)
        guard bytes.count - offset >= expected.count, Array(bytes[offset..<(offset + expected.count)]) == expected else {
            return false
        }
        offset += expected.count
        return true
    }

    /// Reads a big-endian uint32.
    mutating func readUInt32() -> UInt32? {
        guard bytes.count - offset >= 4 else { return nil }
        defer { offset += 4 }
        return bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Reads a length-prefixed string.
    mutating func readString() -> [UInt8]? {
        guard let length = readUInt32().map(Int.init), bytes.count - offset >= length else { return nil }
        defer { offset += length }
        return Array(bytes[offset..<(offset + length)])
    }
}

/// True when the OpenSSH private key at `path` is protected by a passphrase (false when it cannot be read).
public func identityFileIsEncrypted(_ path: String) -> Bool {
    IdentityFile.inspect(path: path)?.isEncrypted ?? false
}
