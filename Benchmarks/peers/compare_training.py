#!/usr/bin/env python3
"""Training-step throughput, Remat against PyTorch on the CPU, side by side in one run.

    swift build -c release --product remat
    python3 Benchmarks/peers/compare_training.py [--threads 1 2] [--steps 10] [--torch PYTHON]

Rows: lenet5 at batch 64 and 256, vgg11, resnet56 and plain-deep-32 at batch 64 (the
issue's table). Both sides: forward, mean softmax cross-entropy, backward, SGD momentum 0.9
lr 0.01, synthetic data, median step time after warm-up. PyTorch runs in its own process
(its thread count and allocator its own); peak RSS is each process's ru_maxrss.
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
REMAT = os.path.join(HERE, "..", "..", ".build", "release", "remat")
ROWS = [("lenet5", 64), ("lenet5", 256), ("vgg11", 64), ("resnet56", 64), ("plain-deep-32", 64)]


def peer(name, batch, threads, steps, warmup):
    sys.path.insert(0, HERE)
    from torch_models import time_steps
    print(json.dumps(time_steps(name, batch, threads, steps, warmup)))


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
    args = ap.parse_args()
    if not os.path.exists(REMAT):
        sys.exit(f"missing {REMAT}: run  swift build -c release --product remat")
    print("| model | batch | threads | Remat img/s | PyTorch img/s | ratio | Remat peak act. MiB | Remat RSS MiB | PyTorch RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in args.threads:
        for name, batch in ROWS:
            if args.models and name not in args.models:
                continue
            ours = json.loads(subprocess.run([REMAT, "bench", "--model", name, "--batch", str(batch), "--threads", str(t),
                                              "--steps", str(args.steps), "--warmup", str(args.warmup), "--json",
                                              "--policies", "none", "--no-tuning"],
                                             check=True, capture_output=True, text=True).stdout)
            theirs = json.loads(subprocess.run([args.torch, os.path.abspath(__file__), "--peer", name, str(batch), str(t),
                                                str(args.steps), str(args.warmup)],
                                               check=True, capture_output=True, text=True).stdout)
            ips_o, ips_p = ours["images_per_second"], batch / theirs["step_seconds_median"]
            print(f"| {name} | {batch} | {t} | {ips_o:.0f} | {ips_p:.0f} | {ips_o / ips_p:.2f} | "
                  f"{ours['peak_activation_mib']:.0f} | {ours['peak_rss_mib']:.0f} | {theirs['peak_rss_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
