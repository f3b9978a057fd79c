"""PyTorch reference for the cbound ONNX training-step benchmark (`examples/train_bench.rs`).

Same work as cbound's step: batch B, two views x + 0.1*randn of D-dimensional inputs, MLP
D-H-H-128 (ReLU) + projector 128-H-128, InfoNCE (L2-normalised, temperature 0.1), Adam lr 1e-3,
`--threads` intra-op threads (default 2). D = 3072, H = 512, B = 256 is the source study's step.

Two variants, timed in this one process one after the other (`--variants`):

* `fused`: both views through the networks as one [2B, D] batch (`torch.cat`), `Adam(fused=True)`:
  PyTorch's fastest fp32 eager step;
* `eager`: one forward pass per view, the default (foreach) Adam.

Prints one line per variant:
`torch VARIANT batch B hidden H median_ms M best_ms M loss L` (train_bench parses it).

With `--products SPEC` it times instead only the matrix products of cbound's step, given by
train_bench in the form `A_SHAPE:B_SHAPE:TA:TB:C;...` (operands as stored, TA/TB 1 for a
transposed operand, C 1 for an added bias): each pass runs every product once, as
`torch.mm`/`torch.addmm` on the (transposed) views, and the line's variant is `products`. That
is the rate PyTorch's own GEMM library reaches on the products of the step, to compare with
ONNX Runtime's on the same list.

Usage: python bench/torch_reference.py [--steps 30] [--warmup 5] [--threads 2] [--batch 256]
       [--hidden 512] [--input 3072] [--variants fused,eager] [--products SPEC]
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


def time_variant(variant, args):
    torch.manual_seed(0)
    d, b, h = args.input, args.batch, args.hidden
    encoder = nn.Sequential(
        nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 128)
    )
    projector = nn.Sequential(nn.Linear(128, h), nn.ReLU(), nn.Linear(h, 128))
    params = list(encoder.parameters()) + list(projector.parameters())
    if variant == "fused":
        opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    else:
        opt = torch.optim.Adam(params, lr=1e-3)
    data = torch.randn(4096, d)
    times = []
    loss = None
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, data.shape[0], (b,))
        x = data[idx]
        x1 = x + 0.1 * torch.randn_like(x)
        x2 = x + 0.1 * torch.randn_like(x)
        t0 = time.perf_counter()
        if variant == "fused":
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
    print(
        f"torch {variant} batch {b} hidden {h} median_ms {med * 1e3:.3f}"
        f" best_ms {min(times) * 1e3:.3f} loss {loss.item():.4f}",
        flush=True,
    )


def time_products(spec, args):
    """Median time of one pass over the products in `spec` (see the module docstring)."""
    torch.manual_seed(0)
    ops = []
    for item in spec.split(";"):
        a_shape, b_shape, ta, tb, c = item.split(":")
        a = torch.randn(*[int(d) for d in a_shape.split("x")])
        b = torch.randn(*[int(d) for d in b_shape.split("x")])
        a = a.t() if ta == "1" else a
        b = b.t() if tb == "1" else b
        bias = torch.randn(b.shape[-1]) if c == "1" else None
        ops.append((a, b, bias))
    times = []
    with torch.no_grad():
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            for a, b, bias in ops:
                if bias is not None:
                    torch.addmm(bias, a, b)
                else:
                    torch.matmul(a, b)
            dt = time.perf_counter() - t0
            if step >= args.warmup:
                times.append(dt)
    med = statistics.median(times)
    print(
        f"torch products batch {args.batch} hidden {args.hidden} median_ms {med * 1e3:.3f}"
        f" best_ms {min(times) * 1e3:.3f} loss 0",
        flush=True,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--input", type=int, default=3072)
    p.add_argument("--variants", default="fused,eager")
    p.add_argument("--products", default=None, help="time only these products (train_bench's list)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    if args.products:
        time_products(args.products, args)
        return
    for variant in args.variants.split(","):
        if variant not in ("fused", "eager"):
            raise SystemExit(f"unknown variant {variant!r} (fused, eager)")
        time_variant(variant, args)


if __name__ == "__main__":
    main()
