import Foundation

/// CRC-32 (IEEE 802.3, as zlib's `crc32`), the per-part checksum of multipart uploads (`x-amz-checksum-crc32`).
///
/// Slicing-by-16 over 16 KiB of tables: about 2.4 GB/s here, a few times faster than a byte at a time (slicing-by-8
/// made 1.9 GB/s), in pure Swift (the project's C stays behind its two wrappers).
struct CRC32 {
    private var state: UInt32 = 0xFFFF_FFFF

    /// The sixteen 256-entry tables, one after the other: table k advances a byte through k more zero bytes.
    private static let tables: [UInt32] = {
        var tables = [UInt32](repeating: 0, count: 16 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
            tables[byte] = crc
        }
        for slice in 1..<16 {
            for byte in 0..<256 {
                let previous = tables[(slice - 1) * 256 + byte]
                tables[slice * 256 + byte] = (previous >> 8) ^ tables[Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    /// Adds `bytes`.
    mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var pointer = bytes.baseAddress else { return }
        var remaining = bytes.count
        var crc = state
        Self.tables.withUnsafeBufferPointer { tables in
            let t = tables.baseAddress!
            // The four words of 16 bytes, each byte looked up in the table for its distance from the end.
            func fold(_ word: UInt32, _ table: Int) -> UInt32 {
                t[(table + 3) * 256 + Int(word & 0xFF)] ^ t[(table + 2) * 256 + Int((word >> 8) & 0xFF)]
                    ^ t[(table + 1) * 256 + Int((word >> 16) & 0xFF)] ^ t[table * 256 + Int(word >> 24)]
            }
            while remaining >= 16 {
                let a = pointer.loadUnaligned(as: UInt32.self).littleEndian ^ crc
                let b = pointer.loadUnaligned(fromByteOffset: 4, as: UInt32.self).littleEndian
                let c = pointer.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
                let d = pointer.loadUnaligned(fromByteOffset: 12, as: UInt32.self).littleEndian
                crc = fold(a, 12) ^ fold(b, 8) ^ fold(c, 4) ^ fold(d, 0)
                pointer += 16
                remaining -= 16
            }
            while remaining > 0 {
                crc = t[Int((crc ^ UInt32(pointer.load(as: UInt8.self))) & 0xFF)] ^ (crc >> 8)
                pointer += 1
                remaining -= 1
            }
        }
        state = crc
    }

    /// The checksum of everything added so far.
    var value: UInt32 { ~state }

    /// The checksum as S3 writes it: its four bytes, most significant first, in base64.
    var base64: String {
        let value = self.value
        let bytes = [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
        return Data(bytes).base64EncodedString()
    }
}
