import Foundation

/// Writes a tar stream (ustar, with GNU long names and base-256 sizes where needed) of regular files whose
/// contents come from elsewhere: a runner's tree is sent as the snapshot's paths and modes over the contents of
/// the local objects, which `tar` could not do without a staging copy of every file.
struct TarWriter {
    /// Where the stream goes.
    let output: FileHandle
    /// When the entries say they were modified.
    var mtime = Int(Date().timeIntervalSince1970)

    /// One regular file: `path` (relative), `mode`, with the content of the file at `source`.
    func add(path: String, mode: UInt32, source: String) throws {
        let fd = open(source, O_RDONLY)
        guard fd >= 0 else { throw TarError.io("cannot read \(source): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw TarError.io("cannot stat \(source)") }
        let size = Int(info.st_size)
        try add(path: path, mode: mode, size: size) { remaining in
            try copy(fd, count: remaining, source: source)
        }
    }

    /// One regular file of `data`.
    func add(path: String, mode: UInt32, data: Data) throws {
        try add(path: path, mode: mode, size: data.count) { _ in try output.write(contentsOf: data) }
    }

    /// The end of the archive: two zero blocks.
    func finish() throws {
        try output.write(contentsOf: Data(count: 1024))
    }

    private func add(path: String, mode: UInt32, size: Int, body: (Int) throws -> Void) throws {
        var name = Array(path.utf8)
        var prefix: [UInt8] = []
        if name.count > 100 {
            // ustar's prefix field takes up to 155 bytes of leading directories; else a GNU long name entry.
            if let cut = splitPoint(name) {
                prefix = Array(name[..<cut])
                name = Array(name[(cut + 1)...])
            } else {
                let long = Array(path.utf8) + [0]
                try output.write(contentsOf: header(name: Array("././@LongLink".utf8), prefix: [], mode: 0o644, size: long.count, type: "L"))
                try output.write(contentsOf: Data(long))
                try pad(long.count)
                name = Array(name.prefix(100))
            }
        }
        try output.write(contentsOf: header(name: name, prefix: prefix, mode: mode, size: size, type: "0"))
        try body(size)
        try pad(size)
    }

    /// Where a long path splits into a prefix of at most 155 bytes and a name of at most 100, if anywhere.
    private func splitPoint(_ bytes: [UInt8]) -> Int? {
        for i in stride(from: min(bytes.count - 1, 155), through: 1, by: -1) where bytes[i] == UInt8(ascii: "/") {
            if bytes.count - i - 1 <= 100 { return i }
            return nil
        }
        return nil
    }

    private func pad(_ size: Int) throws {
        let rest = size % 512
        if rest != 0 { try output.write(contentsOf: Data(count: 512 - rest)) }
    }

    private func header(name: [UInt8], prefix: [UInt8], mode: UInt32, size: Int, type: Character) -> Data {
        var block = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, width: Int) {
            for (i, b) in bytes.prefix(width).enumerated() { block[offset + i] = b }
        }
        func octal(_ value: Int, at offset: Int, width: Int) {
            let digits = String(value, radix: 8)
            let padded = String(repeating: "0", count: max(0, width - 1 - digits.count)) + digits
            put(Array(padded.utf8), at: offset, width: width - 1)
        }
        put(name, at: 0, width: 100)
        octal(Int(mode & 0o7777), at: 100, width: 8)
        octal(0, at: 108, width: 8)
        octal(0, at: 116, width: 8)
        if size < 0o77777777777 {
            octal(size, at: 124, width: 12)
        } else {
            // GNU base-256: the high bit of the first byte set, the size big-endian in the rest.
            block[124] = 0x80
            var value = size
            for i in stride(from: 135, to: 124, by: -1) {
                block[i] = UInt8(value & 0xff)
                value >>= 8
            }
        }
        octal(mtime, at: 136, width: 12)
        block[156] = UInt8(ascii: type.unicodeScalars.first!)
        put(Array("ustar".utf8) + [0], at: 257, width: 6)
        put(Array("00".utf8), at: 263, width: 2)
        put(prefix, at: 345, width: 155)
        // The checksum is computed with its own field as spaces.
        for i in 148..<156 { block[i] = UInt8(ascii: " ") }
        let sum = block.reduce(0) { $0 + Int($1) }
        let digits = String(sum, radix: 8)
        put(Array((String(repeating: "0", count: max(0, 6 - digits.count)) + digits).utf8) + [0, UInt8(ascii: " ")], at: 148, width: 8)
        return Data(block)
    }

    private func copy(_ fd: Int32, count: Int, source: String) throws {
        var remaining = count
        let size = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
        defer { buffer.deallocate() }
        while remaining > 0 {
            let n = read(fd, buffer, min(size, remaining))
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw TarError.io("\(source) changed size while being sent") }
            try output.write(contentsOf: Data(bytesNoCopy: buffer, count: n, deallocator: .none))
            remaining -= n
        }
    }
}

enum TarError: Error, CustomStringConvertible {
    case io(String)

    var description: String {
        switch self {
        case .io(let what): return what
        }
    }
}
