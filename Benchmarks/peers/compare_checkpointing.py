#!/usr/bin/env python3
"""Checkpointing side by side: Remat's sqrt(n) plan (sequential and overlapped recompute)
against PyTorch's checkpoint_sequential (use_reentrant=False) with the same number of
segments, each against its own unchecked step, in one run.

    swift build -c release --product remat
    python3 Benchmarks/peers/compare_checkpointing.py [--threads 2] [--steps 6] [--models resnet56 vgg11]

Prints step time, overhead against no checkpointing, and memory: Remat's exact peak of
activation bytes (allocator) and each process's peak RSS (PyTorch has no exact activation
count on the CPU, so its column is RSS).
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REMAT = os.path.join(HERE, "..", "..", ".build", "release", "remat")


def peer(name, batch, threads, steps, warmup, segments):
    sys.path.insert(0, HERE)
    from torch_models import time_steps
    print(json.dumps(time_steps(name, batch, threads, steps, warmup, segments)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return peer(sys.argv[2], *map(int, sys.argv[3:8]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["resnet56", "vgg11", "plain-deep-32", "plain-deep-64"])
    ap.add_argument("--torch", default=os.environ.get("TORCH_PYTHON", "/opt/torchenv/bin/python"))
    args = ap.parse_args()
    print("| model | who | policy | overlap | step ms | overhead vs none | peak activations MiB | peak RSS MiB |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for name in args.models:
        # one process per configuration, so each peak RSS is that configuration's own
        ours = [json.loads(subprocess.run(
            [REMAT, "bench", "--model", name, "--batch", str(args.batch), "--threads", str(args.threads),
             "--steps", str(args.steps), "--warmup", str(args.warmup), "--json", "--configs", config],
            check=True, capture_output=True, text=True).stdout) for config in ("none", "sequential", "overlapped")]
        for r in ours:
            r["overhead_vs_none"] = r["step_seconds_median"] / ours[0]["step_seconds_median"] - 1
            policy = r["policy"] + (f" ({r['segments']} segments)" if r["segments"] > 1 else "")
            print(f"| {name} | Remat | {policy} | {'on' if r['overlap'] else 'off'} | "
                  f"{1e3 * r['step_seconds_median']:.0f} | {100 * r['overhead_vs_none']:+.0f}% | "
                  f"{r['peak_activation_mib']:.0f} | {r['peak_rss_mib']:.0f} |", flush=True)
        base = None
        for segments in (1, ours[1]["segments"]):  # the same number of segments as Remat's sqrt(n) plan
            theirs = json.loads(subprocess.run(
                [args.torch, os.path.abspath(__file__), "--peer", name, str(args.batch), str(args.threads),
                 str(args.steps), str(args.warmup), str(segments)], check=True, capture_output=True, text=True).stdout)
            t = theirs["step_seconds_median"]
            base = base or t
            print(f"| {name} | PyTorch | {'none' if segments == 1 else f'{segments} segments'} | off | {1e3 * t:.0f} | "
                  f"{100 * (t / base - 1):+.0f}% | - | {theirs['peak_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
