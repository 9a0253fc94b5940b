import DstackModel
import Foundation

/// libFuzzer entry point: the input is an artifact manifest as a storage holds it (JSON written by anyone with
/// write access). Decoding ends in a manifest or an error; a decoded one is checked for placing, alone and
/// together with itself under another key, which must end in a verdict, never a crash or a hang.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzManifest(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let json = Data(bytes: data, count: size)
    guard let manifest = try? RecordCoding.decoder().decode(ArtifactManifest.self, from: json) else { return 0 }
    var other = manifest
    other.cacheKey += "-2"
    _ = ArtifactPlacement.problem([manifest])
    _ = ArtifactPlacement.problem([manifest, other])
    return 0
}
