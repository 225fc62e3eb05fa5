// swift-tools-version:6.2
// libFuzzer harnesses for Remat's readers and the command line's policy and budget parsing.
// Built with -sanitize=fuzzer (coverage-guided) by .ci/fuzz.sh; a plain build replays files.
import PackageDescription

let package = Package(
    name: "RematFuzz",
    dependencies: [.package(name: "Remat", path: "../..")],
    targets: [
        .executableTarget(name: "remat-fuzz", dependencies: [.product(name: "Remat", package: "Remat")],
                          swiftSettings: [.unsafeFlags(["-parse-as-library"])]),
    ]
)
