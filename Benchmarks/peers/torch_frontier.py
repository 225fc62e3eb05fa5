#!/usr/bin/env python3
"""PyTorch's points on the memory / time curve of `remat bench --frontier --plot`: one JSON
object a line for checkpoint_sequential (use_reentrant=False) with 1 (no checkpointing) to n
segments, n the model's top-level modules.

    python3 Benchmarks/peers/torch_frontier.py --model resnet56 > torch.jsonl
    .build/release/remat bench --model resnet56 --frontier --plot curve.svg --peer-points torch.jsonl

step_ms: the median step (forward, cross-entropy, backward, SGD with momentum), the
configurations taking turns a step at a time in one process. peak_activation_mib: the most
bytes PyTorch's CPU allocator held during one step above what it held before it, from the
profiler's allocation events (Remat's column counts the same: activations, their gradients
and scratch; PyTorch's also holds the parameter gradients, about 3 MiB for resnet56).
"""
import argparse, json, os, statistics, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def peak_mib(name, batch, threads, segments):
    """Peak MiB the allocator held above its level before a step (the second: the first
    allocates the parameter gradients and the optimizer's state)."""
    import torch, torch.nn as nn
    from torch.utils.checkpoint import checkpoint_sequential
    from torch_models import model
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, shape = model(name)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        out = checkpoint_sequential(net, segments, x, use_reentrant=False) if segments > 1 else net(x)
        nn.CrossEntropyLoss()(out, y).backward()
        del out
        opt.step()

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    live = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"):
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet56")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    from torch_models import model, _step_times
    n = len(model(args.model)[0])
    counts = sorted({c for c in (1, 2, 3, 4, 6, 8, 12, 16, n) if c <= n})
    times, _ = _step_times(args.model, args.batch, args.threads, args.steps, args.warmup, counts)
    for c in counts:
        print(json.dumps({"who": "PyTorch checkpoint_sequential", "label": "none" if c == 1 else f"{c} segments",
                          "segments": c, "peak_activation_mib": peak_mib(args.model, args.batch, args.threads, c),
                          "step_ms": 1e3 * statistics.median(times[c])}), flush=True)


if __name__ == "__main__":
    main()
