"""PyTorch reference for the cbound ONNX training-step benchmark.

Same setup as `cargo run --release --example train_bench`: batch 256, two views
x + 0.1*randn of 3072-d inputs, MLP 3072-512-512-128 (ReLU) + projector
128-512-128, InfoNCE (L2-normalised, temperature 0.1), Adam lr 1e-3,
2 intra-op threads. Prints the median samples/s and ms/step over the timed steps.

Usage: python bench/torch_reference.py [--steps 30] [--warmup 5] [--threads 2]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def info_nce(z1, z2, temperature):
    z1 = F.normalize(z1, dim=1)
    z2 = F.normalize(z2, dim=1)
    logits = z1 @ z2.t() / temperature
    labels = torch.arange(z1.shape[0])
    return F.cross_entropy(logits, labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--concat", action="store_true", help="run both views as one [2B, d] batch")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d, b = 3072, args.batch
    encoder = nn.Sequential(
        nn.Linear(d, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128)
    )
    projector = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 128))
    params = list(encoder.parameters()) + list(projector.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    data = torch.randn(4096, d)

    times = []
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, data.shape[0], (b,))
        x = data[idx]
        x1 = x + 0.1 * torch.randn_like(x)
        x2 = x + 0.1 * torch.randn_like(x)
        t0 = time.perf_counter()
        if args.concat:
            z = projector(encoder(torch.cat([x1, x2], 0)))
            z1, z2 = z[:b], z[b:]
        else:
            z1 = projector(encoder(x1))
            z2 = projector(encoder(x2))
        loss = info_nce(z1, z2, 0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step >= args.warmup:
            times.append(dt)
    med = statistics.median(times)
    best = min(times)
    print(f"torch {torch.__version__} threads={args.threads} batch={b} concat={args.concat}")
    print(
        f"median ms/step {med * 1e3:.2f}  samples/s {b / med:.0f}  (best {best * 1e3:.2f} ms/step)"
        f"  final loss {loss.item():.4f}"
    )


if __name__ == "__main__":
    main()
