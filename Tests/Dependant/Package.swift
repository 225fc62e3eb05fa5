// swift-tools-version:6.2
// A package that depends on Remat by path, as a user's would by URL: proof that the root
// manifest's OpenMP flags and the kernels build and link for dependants too.
// .ci/run builds and runs it: swift run --package-path Tests/Dependant
import PackageDescription

let package = Package(
    name: "Dependant",
    dependencies: [.package(name: "Remat", path: "../..")],
    targets: [
        .executableTarget(name: "Dependant", dependencies: [.product(name: "Remat", package: "Remat")]),
    ]
)
