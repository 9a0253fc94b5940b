// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "dstack",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "dstack", targets: ["dstack"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // S3's HTTP client (docs/storage.md says why); swift-nio and swift-nio-ssl come with it, named here for
        // the types that S3Transport.swift uses (errors, buffers, the event loop group).
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.100.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
    ],
    targets: [
        // C libraries, each behind exactly one Swift wrapper module.
        .systemLibrary(
            name: "CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"]), .brew(["libyaml"])]
        ),
        .systemLibrary(
            name: "CLibSSH2",
            pkgConfig: "libssh2",
            providers: [.apt(["libssh2-1-dev"]), .brew(["libssh2"])]
        ),
        .target(name: "DstackYAML", dependencies: ["CYAML"]),
        .target(name: "DstackModel", dependencies: [
            "DstackYAML",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "DstackSSH", dependencies: [
            "CLibSSH2",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "DstackStorage", dependencies: [
            "DstackModel",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .target(name: "DstackRunners", dependencies: [
            "DstackModel",
            "DstackSSH",
            .product(name: "Logging", package: "swift-log"),
        ], resources: [
            // The shell code that runs on runners, in files of its own (linted by the tests; docs/agent.md),
            // compiled into the binary: nothing to find at run time.
            .embedInCode("Scripts/agent.sh"),
            .embedInCode("Scripts/wrapper.sh"),
            .embedInCode("Scripts/tree-build.sh"),
            .embedInCode("Scripts/tree-from-tar.sh"),
            .embedInCode("Scripts/tree-publish.sh"),
            .embedInCode("Scripts/objects-list.sh"),
            .embedInCode("Scripts/objects-adopt.sh"),
            .embedInCode("Scripts/artifacts-inspect.sh"),
            .embedInCode("Scripts/transfer.sh"),
            .embedInCode("Scripts/python-env.sh"),
            .embedInCode("Scripts/slurm.sh"),
            .embedInCode("Scripts/slurm-batch.sh"),
        ]),
        .target(name: "DstackCore", dependencies: [
            "DstackModel", "DstackStorage", "DstackRunners",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        // The CLI parses, calls DstackCore and renders: the model's records, the runners' probe and storage's
        // errors are what it renders, so it names those modules; everything that does something is in DstackCore.
        .target(name: "DstackCLI", dependencies: [
            "DstackCore", "DstackModel", "DstackRunners", "DstackStorage",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "dstack", dependencies: ["DstackCLI"]),

        .testTarget(name: "DstackModelTests", dependencies: ["DstackModel", "DstackYAML"], exclude: ["Fixtures"]),
        .testTarget(name: "DstackStorageTests", dependencies: ["DstackStorage"], exclude: ["Fixtures"]),
        .testTarget(name: "DstackSSHTests", dependencies: ["DstackSSH"]),
        .testTarget(name: "DstackCoreTests", dependencies: ["DstackCore"]),
        .testTarget(name: "DstackCLITests", dependencies: ["DstackCore", "DstackStorage", "DstackModel", "DstackRunners"]),
    ],
    swiftLanguageModes: [.v6]
)

// libFuzzer targets, one executable per parser (scripts/fuzz builds them with -sanitize=fuzzer,address into a
// build folder of their own). They exist only when DSTACK_FUZZ is set, so that 'swift build' and 'swift test'
// never compile them: an executable built without -sanitize=fuzzer would have no main function.
if Context.environment["DSTACK_FUZZ"] != nil {
    let fuzzers: [(name: String, dependencies: [Target.Dependency])] = [
        ("FuzzWorkflows", ["DstackModel", "DstackYAML"]),
        ("FuzzInventory", ["DstackModel", "DstackYAML"]),
        ("FuzzSSHConfig", ["DstackModel"]),
        ("FuzzKnownHosts", ["DstackSSH"]),
        ("FuzzManifest", ["DstackModel"]),
        ("FuzzAgentReply", ["DstackRunners"]),
    ]
    for fuzzer in fuzzers {
        package.targets.append(.executableTarget(
            name: fuzzer.name, dependencies: fuzzer.dependencies, path: "Fuzz/\(fuzzer.name)",
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
        package.products.append(.executable(name: fuzzer.name, targets: [fuzzer.name]))
    }
}
