#!/usr/bin/env python3
"""Checkpointing side by side: Remat's policies (sqrt(n); every k blocks with k = ceil(sqrt(blocks)),
the textbook split by block count; a memory budget of 40% of the unchecked peak, or the smallest
feasible budget where that is more), each with recompute sequential and overlapped; selective
(sequential only: it rebuilds each block on the backward thread);
and sqrt(n) overlapped with the recompute thread held to 40% of the unchecked peak (`--overlap-memory-limit`;
its overhead is against the none row of its own run), against PyTorch's
checkpoint_sequential (use_reentrant=False) with the same number of segments as Remat's
sqrt(n) plan, each against its own unchecked step.

    swift build -c release --product remat
    python3 Benchmarks/peers/compare_checkpointing.py [--threads 2] [--steps 6] [--models resnet56 vgg11] [--ideal]

Each side times its configurations in turn, a step at a time, in one process (drift falls on
all alike). Prints step time, overhead against no checkpointing, the share of the recompute
the overlap hid, with --ideal the overhead of each sequential step's one-thread work spread
evenly over the threads (`remat bench --ideal`: what no overlap beats unless the kernels run
faster side by side than alone), and memory: Remat's exact peak of activation bytes (allocator) and its peak
RSS over one step of each configuration; for PyTorch (no exact activation count on the CPU)
the peak RSS of a separate short process per configuration. With 2 or more threads, a row
per model gives the cache-line round trip between two cores that `remat bench` measured
(about 100 ns: the cores share a last-level cache; several times more: they do not).
"""
import argparse, json, math, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REMAT = os.path.join(HERE, "..", "..", ".build", "release", "remat")


def main():
    if len(sys.argv) > 1 and sys.argv[1] in ("--peer", "--peer-rss"):
        sys.path.insert(0, HERE)
        from torch_models import time_interleaved, time_steps
        name, batch, threads, steps, warmup = sys.argv[2], *map(int, sys.argv[3:7])
        counts = [int(c) for c in sys.argv[7].split(",")]
        if sys.argv[1] == "--peer":
            print(json.dumps(time_interleaved(name, batch, threads, steps, warmup, counts)))
        else:
            print(json.dumps(time_steps(name, batch, threads, steps, warmup, counts[0])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["resnet56", "vgg11", "plain-deep-32", "plain-deep-64"])
    ap.add_argument("--ideal", action="store_true", help="also time each sequential step on one thread (remat bench --ideal)")
    ap.add_argument("--torch", default=os.environ.get("TORCH_PYTHON", "/opt/torchenv/bin/python"))
    args = ap.parse_args()
    common = ["--batch", str(args.batch), "--threads", str(args.threads)]
    print("| model | who | policy | overlap | step ms | overhead vs none | recompute hidden | ideal | peak activations MiB | peak RSS MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        plan = json.loads(subprocess.run([REMAT, "plan", "--model", name, "--batch", str(args.batch), "--json"],
                                         check=True, capture_output=True, text=True).stdout)
        budget = max(int(0.4 * plan["none_peak_bytes"]), plan["smallest_budget_bytes"])
        # the textbook sqrt(n): segments of ceil(sqrt(blocks)) blocks each, by count, not bytes
        every = f"every-{math.ceil(math.sqrt(len(plan['blocks'])))}"
        ours = [json.loads(line) for line in subprocess.run(
            [REMAT, "bench", "--model", name, *common, "--steps", str(args.steps), "--warmup", str(args.warmup),
             "--policies", "none", "sqrt", every, "selective", "--budget", str(budget), "--json", "--no-tuning",
             *(["--ideal"] if args.ideal and args.threads > 1 else [])],
            check=True, capture_output=True, text=True).stdout.splitlines()]
        # the target's configuration: sqrt(n) overlapped, its recompute thread held to 40 %
        limit = int(0.4 * plan["none_peak_bytes"])
        for r in [json.loads(line) for line in subprocess.run(
                [REMAT, "bench", "--model", name, *common, "--steps", str(args.steps), "--warmup", str(args.warmup),
                 "--policies", "none", "sqrt", "--overlap", "on", "--overlap-memory-limit", str(limit), "--json", "--no-tuning"],
                check=True, capture_output=True, text=True).stdout.splitlines()]:
            if r["policy"] == "sqrt(n)":
                r["policy"] += f", overlap memory limit {limit / 2**20:.0f} MiB"
                ours.append(r)
        for r in ours:
            policy = r["policy"] + (f" ({r['segments']} segments)" if r["segments"] > 1 else "")
            hidden = "-" if r["overlap_hidden"] is None else f"{100 * r['overlap_hidden']:.0f}%"
            ideal = "-" if r.get("ideal_overhead_vs_none") is None else f"{100 * r['ideal_overhead_vs_none']:+.0f}%"
            print(f"| {name} | Remat | {policy} | {'on' if r['overlap'] else 'off'} | "
                  f"{1e3 * r['step_seconds_median']:.0f} | {100 * r['overhead_vs_none']:+.0f}% | {hidden} | {ideal} | "
                  f"{r['peak_activation_mib']:.0f} | {r['peak_rss_mib']:.0f} |", flush=True)
        trips = [t for r in ours for t in (r["core_round_trip_ns_before"], r["core_round_trip_ns_after"])]
        if args.threads > 1:
            print(f"| {name} | Remat | (cache-line round trip between the cores: {min(trips):.0f}-{max(trips):.0f} ns) "
                  "| | | | | | | |", flush=True)
        segments = next(r["segments"] for r in ours if r["policy"] == "sqrt(n)")
        peer = [args.torch, os.path.abspath(__file__)]
        times = json.loads(subprocess.run(peer + ["--peer", name, str(args.batch), str(args.threads), str(args.steps),
                                                  str(args.warmup), f"1,{segments}"], check=True, capture_output=True, text=True).stdout)
        for s in (1, segments):
            rss = json.loads(subprocess.run(peer + ["--peer-rss", name, str(args.batch), str(args.threads), "2", "1", str(s)],
                                            check=True, capture_output=True, text=True).stdout)["peak_rss_mib"]
            t = times[str(s)]
            print(f"| {name} | PyTorch | {'none' if s == 1 else f'{s} segments'} | off | {1e3 * t:.0f} | "
                  f"{100 * (t / times['1'] - 1):+.0f}% | - | - | - | {rss:.0f} |", flush=True)


if __name__ == "__main__":
    main()
