// swift-tools-version:6.2
// 6.2 or later: unsafeFlags no longer stop other packages from depending on Remat by version.
import PackageDescription
import Foundation

// MARK: - OpenMP (LLVM's libomp, Debian package libomp-dev)

/// Where libomp's header and library live. Swift's own clang ships no omp.h, so we look for the
/// one libomp-dev installs under /usr/lib/llvm-*/ (any version), or where REMAT_OMP_INCLUDE and
/// REMAT_OMP_LIB point. The manifest stops with a message naming the package when none is found.
struct OpenMP {
    let includeDir: String
    let libDir: String

    static func locate() -> OpenMP {
        let env = ProcessInfo.processInfo.environment
        if let inc = env["REMAT_OMP_INCLUDE"], let lib = env["REMAT_OMP_LIB"] {
            return OpenMP(includeDir: inc, libDir: lib)
        }
        let fm = FileManager.default
        let llvmRoots = ((try? fm.contentsOfDirectory(atPath: "/usr/lib")) ?? [])
            .filter { $0.hasPrefix("llvm-") }
            .sorted { (Int($0.dropFirst(5)) ?? 0) > (Int($1.dropFirst(5)) ?? 0) }  // newest first
            .map { "/usr/lib/\($0)" }
        for root in llvmRoots {
            let lib = "\(root)/lib"
            guard fm.fileExists(atPath: "\(lib)/libomp.so") else { continue }
            let clangDir = "\(lib)/clang"
            for version in ((try? fm.contentsOfDirectory(atPath: clangDir)) ?? []).sorted().reversed() {
                let inc = "\(clangDir)/\(version)/include"
                if fm.fileExists(atPath: "\(inc)/omp.h") { return OpenMP(includeDir: inc, libDir: lib) }
            }
        }
        // a plain message and exit status, not fatalError's crash report
        FileHandle.standardError.write(Data("""
            error: Remat needs LLVM's OpenMP runtime (omp.h and libomp.so) and found none under /usr/lib/llvm-*.
            Install it with:  apt-get install -y libomp-dev
            or point REMAT_OMP_INCLUDE (the folder with omp.h) and REMAT_OMP_LIB (the folder with libomp.so) at it.

            """.utf8))
        exit(1)
    }
}

let omp = OpenMP.locate()

// MARK: - MPI (optional: Open MPI, Debian packages libopenmpi-dev and openmpi-bin)

/// Whether pkg-config can find Open MPI's C bindings (ompi-c.pc). Without them Remat builds
/// as usual and its distributed path is unavailable (it says how to get it when asked for).
/// REMAT_NO_MPI=1 builds without it even where it is installed.
let mpi: Bool = {
    let env = ProcessInfo.processInfo.environment
    if env["REMAT_NO_MPI"] == "1" { return false }
    let dirs = (env["PKG_CONFIG_PATH"] ?? "").split(separator: ":").map(String.init)
        + ["/usr/lib/x86_64-linux-gnu/pkgconfig", "/usr/lib/aarch64-linux-gnu/pkgconfig", "/usr/lib/pkgconfig",
           "/usr/share/pkgconfig", "/usr/local/lib/pkgconfig"]
    return dirs.contains { FileManager.default.fileExists(atPath: "\($0)/ompi-c.pc") }
}()

// MARK: - Targets

let package = Package(
    name: "Remat",
    products: [
        .library(name: "Remat", targets: ["Remat"]),
        .library(name: "RematKernels", targets: ["RematKernels"]),
        .executable(name: "remat", targets: ["remat"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.6.0"),
        // `swift package generate-documentation --target Remat` (the DocC catalog)
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // The C kernels behind one header (Kernels/include/RematKernels.h).
        .target(
            name: "RematKernels",
            path: "Kernels",
            cSettings: [
                .unsafeFlags([
                    "-fopenmp",
                    // after clang's own headers, so only omp.h comes from libomp-dev
                    "-idirafter", omp.includeDir,
                    // kernels are always optimised: SwiftPM would build C at -O0 in debug
                    "-O3",
                    // no -march and no -ffast-math: ISA-specific code opts in per function with
                    // __attribute__((target(...))), so the portable fallback stays portable
                    "-std=gnu11",
                    // a * b + c stays two roundings in every ISA's copy of a kernel (KN_BY_ISA)
                    "-ffp-contract=off",
                ]),
            ],
            linkerSettings: [
                .linkedLibrary("omp"),
                .linkedLibrary("m"),
                .unsafeFlags(["-L", omp.libDir, "-Xlinker", "-rpath", "-Xlinker", omp.libDir]),
            ]
        ),
        // zlib for gzip-compressed datasets (Debian package zlib1g-dev).
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        // The Swift library: hides the C pointers. With MPI, its distributed path too.
        .target(name: "Remat", dependencies: ["RematKernels", "CZlib"] + (mpi ? ["CMPI"] : [])),
        // The `remat` command: bench, train, tune, plan.
        .executableTarget(name: "remat", dependencies: [
            "Remat", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "RematKernelsTests", dependencies: ["RematKernels", "Remat"]),
        .testTarget(name: "RematTests", dependencies: ["Remat"]),
        // Runs the built `remat` end to end (a dependency, so `swift test` builds it first).
        .testTarget(name: "RematCLITests", dependencies: ["remat", "Remat"]),
    ] + (mpi ? [
        // Open MPI through pkg-config (ompi-c); only where it is installed
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
    ] : [])
)
