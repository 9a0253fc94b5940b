/// Checks a set of manifests read from a shared storage before any of their files is placed.
public enum ArtifactPlacement {
    /// Why the manifests cannot be placed together (an entry that escapes or is not a plain relative path, an
    /// entry below a link, a link that resolves outside its artifact through the links of all of them), or nil.
    public static func problem(_ manifests: [ArtifactManifest]) -> String? {
        var links: [String: String] = [:]
        for manifest in manifests {
            for file in manifest.files {
                guard relativePathProblem(file.path) == nil, normalizedRelativePath(file.path) == file.path else {
                    return "artifact path '\(file.path)' in manifest \(manifest.cacheKey) escapes its directory or is not a plain relative path; refusing to place it"
                }
                if let link = file.link { links[file.path] = link }
            }
        }
        for manifest in manifests {
            for file in manifest.files {
                let parts = file.path.split(separator: "/")
                for end in parts.indices.dropLast() where links[parts[...end].joined(separator: "/")] != nil {
                    return "artifact entry '\(file.path)' in manifest \(manifest.cacheKey) lies below a link; refusing to place it"
                }
                guard let link = file.link else { continue }
                let root = manifest.paths.map(normalizedRelativePath).first { file.path == $0 || file.path.hasPrefix($0 + "/") } ?? ""
                guard LinkResolver(links: links).staysInside(link: file.path, target: link, artifactRoot: root) else {
                    return "artifact link '\(file.path)' -> '\(link)' in manifest \(manifest.cacheKey) points outside its artifact; refusing to place it"
                }
            }
        }
        return nil
    }
}

/// Resolves a link's target the way the file system would, through a known set of links, without touching disk.
public struct LinkResolver: Sendable {
    /// Every link that will exist, by path relative to the folder, with its target.
    public let links: [String: String]
    /// The most links followed in one resolution (as Linux's `MAXSYMLINKS`).
    public static let maximumHops = 40

    /// A resolver through `links`.
    public init(links: [String: String]) {
        self.links = links
    }

    /// True when the link at `link` pointing to `target` resolves inside `artifactRoot` (or is it), and every
    /// folder passed on the way is inside it or above it: a detour through anything else, which might itself
    /// be a link nobody checked, is refused.
    public func staysInside(link: String, target: String, artifactRoot root: String) -> Bool {
        func allowed(_ parts: [String], final: Bool) -> Bool {
            let path = parts.joined(separator: "/")
            let inside = root.isEmpty || path == root || path.hasPrefix(root + "/")
            let above = path.isEmpty || root.hasPrefix(path + "/")
            return inside || (!final && above)
        }
        if target.hasPrefix("/") { return false }
        var resolved = link.split(separator: "/").dropLast().map(String.init)
        var pending = target.split(separator: "/").map(String.init)
        var hops = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            switch component {
            case ".":
                continue
            case "..":
                if resolved.isEmpty { return false }
                resolved.removeLast()
            default:
                resolved.append(component)
                if let next = links[resolved.joined(separator: "/")] {
                    hops += 1
                    if hops > Self.maximumHops || next.hasPrefix("/") { return false }
                    resolved.removeLast()
                    pending = next.split(separator: "/").map(String.init) + pending
                }
            }
            if !allowed(resolved, final: false) { return false }
        }
        return allowed(resolved, final: true)
    }
}

