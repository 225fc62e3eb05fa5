// swift-tools-version:6.2
// Benchmarks live in their own package (package-benchmark's convention), so users of Remat
// do not inherit the benchmark dependencies.
import PackageDescription

let package = Package(
    name: "RematBenchmarks",
    dependencies: [
        .package(name: "Remat", path: ".."),
        // MallocInterposer only: the default RuntimeInterposer trait needs a package this
        // toolchain's mirror does not carry.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.6.0"),
    ],
    targets: [
        // The layer shapes of the docs/WORKLOADS.md models, shared by the suite and the peer driver.
        .target(name: "KernelShapes", dependencies: [.product(name: "RematKernels", package: "Remat")]),
        // `swift package benchmark`: the package-benchmark suite (statistics, regressions).
        .executableTarget(
            name: "KernelBenchmarks",
            dependencies: [
                "KernelShapes",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "RematKernels", package: "Remat"),
            ],
            path: "Benchmarks/KernelBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        // `kernel-bench`: the quick kernel benchmark (the README's main job until `remat bench`
        // exists) and our side of the side-by-side runs driven by peers/compare_kernels.py.
        .executableTarget(name: "kernel-bench", dependencies: [
            "KernelShapes", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
    ]
)
