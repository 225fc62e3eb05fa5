#!/usr/bin/env python3
"""Training-step throughput, Remat against PyTorch on the CPU, side by side in one run.

    swift build -c release --product remat
    python3 Benchmarks/peers/compare_training.py [--threads 1 2] [--steps 10] [--torch PYTHON] [--isa avx2]

Rows: lenet5 at batch 64 and 256, vgg11, resnet56 and plain-deep-32 at batch 64 (the
rows of docs/BENCHMARKS.md). Both sides: forward, mean softmax cross-entropy, backward, SGD momentum 0.9
lr 0.01, synthetic data, median step time after warm-up. PyTorch runs in its own process
(its thread count and allocator its own); peak RSS is each process's ru_maxrss. Remat's
activation peak is its allocator's; PyTorch's CPU allocator keeps none, so its column is the
memory autograd saves for the backward pass (torch_models.saved_for_backward_mib). The
fraction of the FMA peak (measured by kernel-bench, when the Benchmarks package is built)
counts a step as 3 x the docs/WORKLOADS.md forward FLOPs. Each row
runs the two sides alternately --rounds times (ours, theirs, ours, theirs, ...) and reports
the median of each side and the median of the per-round ratios, so that the machine's
drift over minutes falls on both. The last column is the range of the cache-line round trip
between two cores that `remat bench` measured before and after its steps (about 100 ns when
the two share a last-level cache, several times more when the host placed them apart).
--isa avx2 holds both sides to AVX2 and FMA on a CPU that has more (REMAT_ISA for Remat;
ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA for PyTorch): the vector width and instruction mix
of an AVX2-only CPU, on this CPU's caches and clock.
"""
import statistics
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REMAT = os.path.join(HERE, "..", "..", ".build", "release", "remat")
ROWS = [("lenet5", 64), ("lenet5", 256), ("vgg11", 64), ("resnet56", 64), ("plain-deep-32", 64)]
# docs/WORKLOADS.md: forward GFLOP per image (a training step counts as 3x forward)
FORWARD_GFLOP = {"lenet5": 0.00083, "vgg11": 0.306, "resnet56": 0.251, "plain-deep-32": 2.34}
KERNEL_BENCH = os.path.join(HERE, "..", ".build", "release", "kernel-bench")


def isa_env(isa):
    """The environment that holds both sides to `isa` (None: each side's best)."""
    env = dict(os.environ)
    if isa:
        env.update(REMAT_ISA=isa, ATEN_CPU_CAPABILITY=isa, ONEDNN_MAX_CPU_ISA=isa.upper())
    return env


def fma_peak(threads, env):
    """This machine's FMA peak in GFLOP/s at `threads`, measured by kernel-bench (the Benchmarks
    package); None where it is not built."""
    if not os.path.exists(KERNEL_BENCH):
        return None
    out = subprocess.run([KERNEL_BENCH, "--only", "peak", "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.splitlines()[0])["gflops"]


def peer(name, batch, threads, steps, warmup):
    sys.path.insert(0, HERE)
    from torch_models import time_steps
    print(json.dumps(time_steps(name, batch, threads, steps, warmup)))


def percent_of_peak(images_per_second, name, peak):
    return "-" if peak is None else f"{100 * images_per_second * 3 * FORWARD_GFLOP[name] / peak:.0f} %"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        name, batch, threads, steps, warmup = sys.argv[2], *map(int, sys.argv[3:7])
        return peer(name, batch, threads, steps, warmup)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--torch", default=os.environ.get("TORCH_PYTHON", "/opt/torchenv/bin/python"))
    ap.add_argument("--models", nargs="+", help="only these rows (model names)")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides per row")
    ap.add_argument("--isa", choices=["avx2"], help="hold both sides to this instruction set")
    args = ap.parse_args()
    env = isa_env(args.isa)
    if not os.path.exists(REMAT):
        sys.exit(f"missing {REMAT}: run  swift build -c release --product remat")
    print("| model | batch | threads | Remat img/s | PyTorch img/s | ratio, median of rounds (range) | Remat % of FMA peak "
          "| Remat peak act. MiB | PyTorch saved for backward MiB | Remat RSS MiB | PyTorch RSS MiB | core round trip ns |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    peaks = {t: fma_peak(t, env) for t in args.threads}
    for t in args.threads:
        for name, batch in ROWS:
            if args.models and name not in args.models:
                continue
            mine, peers, ratios, trips = [], [], [], []
            for _ in range(args.rounds):
                ours = json.loads(subprocess.run([REMAT, "bench", "--model", name, "--batch", str(batch), "--threads", str(t),
                                                  "--steps", str(args.steps), "--warmup", str(args.warmup), "--json",
                                                  "--policies", "none", "--no-tuning"],
                                                 check=True, capture_output=True, text=True, env=env).stdout)
                theirs = json.loads(subprocess.run([args.torch, os.path.abspath(__file__), "--peer", name, str(batch), str(t),
                                                    str(args.steps), str(args.warmup)],
                                                   check=True, capture_output=True, text=True, env=env).stdout)
                mine.append(ours["images_per_second"])
                peers.append(batch / theirs["step_seconds_median"])
                ratios.append(mine[-1] / peers[-1])
                trips += [ours["core_round_trip_ns_before"], ours["core_round_trip_ns_after"]]
            print(f"| {name} | {batch} | {t} | {statistics.median(mine):.0f} | {statistics.median(peers):.0f} | "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | "
                  f"{percent_of_peak(statistics.median(mine), name, peaks[t])} | "
                  f"{ours['peak_activation_mib']:.0f} | {theirs['saved_mib']:.0f} | "
                  f"{ours['peak_rss_mib']:.0f} | {theirs['peak_rss_mib']:.0f} | "
                  f"{'-' if t < 2 else f'{min(trips):.0f}-{max(trips):.0f}'} |", flush=True)

if __name__ == "__main__":
    main()
