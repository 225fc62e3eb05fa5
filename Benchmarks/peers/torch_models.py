"""The docs/WORKLOADS.md models in PyTorch, built exactly as Remat's zoo builds them."""
import torch
import torch.nn as nn


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def vgg11():
    layers, c = [], 3
    for k, pool in [(64, True), (128, True), (256, False), (256, True), (512, False), (512, True), (512, False), (512, True)]:
        layers += [nn.Conv2d(c, k, 3, padding=1, bias=False), nn.BatchNorm2d(k), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        c = k
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, 10))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.main = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return torch.relu(self.main(x) + self.short(x))


def resnet(n):
    blocks, c = [nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())], 16
    for stage, k in enumerate([16, 32, 64]):
        for i in range(n):
            blocks.append(BasicBlock(c, k, 2 if stage > 0 and i == 0 else 1))
            c = k
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def plain_deep(d):
    layers = [nn.Conv2d(3, 64, 3, padding=1), nn.ReLU()]
    for _ in range(d - 1):
        layers += [nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def model(name):
    if name == "lenet5":
        return lenet5(), (1, 28, 28)
    if name == "vgg11":
        return vgg11(), (3, 32, 32)
    if name == "resnet20":
        return resnet(3), (3, 32, 32)
    if name == "resnet56":
        return resnet(9), (3, 32, 32)
    if name.startswith("plain-deep-"):
        return plain_deep(int(name[len("plain-deep-"):])), (3, 32, 32)
    raise SystemExit(f"unknown model {name}")


def time_steps(name, batch, threads, steps, warmup, segments=1):
    """Median seconds of a PyTorch training step (forward, cross-entropy, backward, SGD with
    momentum 0.9, lr 0.01) on random data, after warm-up; with segments > 1 the forward runs
    through checkpoint_sequential(use_reentrant=False). Also returns the peak RSS in MiB and
    the number of top-level modules."""
    import resource, statistics
    times, modules = _step_times(name, batch, threads, steps, warmup, [segments])
    return {"step_seconds_median": statistics.median(times[segments]),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "saved_mib": saved_for_backward_mib(name, batch),
            "modules": modules, "torch": torch.__version__}


def saved_for_backward_mib(name, batch):
    """MiB of the tensors autograd keeps from the forward pass for the backward (distinct
    storages, parameters left out): PyTorch's CPU allocator reports no peak, so this is its
    side of the activation-memory column (the kept activations, without the transient
    gradient and scratch buffers that Remat's allocator peak also counts)."""
    torch.manual_seed(0)
    net, shape = model(name)
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    storages = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(torch.randn(batch, *shape))
    del out
    return sum(storages.values()) / 2**20


def time_interleaved(name, batch, threads, steps, warmup, segment_counts):
    """Median step seconds for each segment count (1: no checkpointing), the configurations
    taking turns a step at a time in one process so that drift falls on all alike."""
    import statistics
    times, _ = _step_times(name, batch, threads, steps, warmup, segment_counts)
    return {str(s): statistics.median(t) for s, t in times.items()}


def _step_times(name, batch, threads, steps, warmup, segment_counts):
    """Seconds of each timed step per segment count, one model each, taking turns; and the
    model's number of top-level modules."""
    import time
    from torch.utils.checkpoint import checkpoint_sequential
    torch.set_num_threads(threads)
    runs = []
    for segments in segment_counts:
        torch.manual_seed(0)
        net, shape = model(name)
        runs.append((segments, net, torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)))
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    loss_fn = nn.CrossEntropyLoss()
    times = {s: [] for s in segment_counts}
    for i in range(warmup + steps):
        for segments, net, opt in runs:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            out = checkpoint_sequential(net, segments, x, use_reentrant=False) if segments > 1 else net(x)
            loss_fn(out, y).backward()
            opt.step()
            if i >= warmup:
                times[segments].append(time.perf_counter() - t0)
    return times, len(runs[0][1])
