"""PyTorch reference for scripts/gpu-check.sh: the study's training step on one CUDA GPU.

The model and step are cbound's train stage in the check's pipeline: batch B of pairs, two
views x + 0.1*randn of D = 3072 inputs, MLP 3072-512-512-128 (ReLU) + projector 128-512-128,
InfoNCE (L2-normalised, temperature 0.1), Adam lr 1e-3. Both views go through the networks as
one [2B, D] batch and the optimizer is `Adam(fused=True)`: PyTorch's fastest eager step.

TF32 is off for matrix products and convolutions (`--tf32` turns it on), so fp32 means IEEE
fp32 products as in cbound's fp32 graph; the JSON line records the setting. `fp16_mixed` uses
autocast(float16) with a GradScaler (dynamic loss scaling), `bf16_mixed` autocast(bfloat16).

Prints one JSON line:
{"impl": "pytorch", "precision": ..., "tf32": ..., "batch": B, "steps": N, "samples_per_s": ...,
 "ms_per_step": ..., "peak_device_memory_bytes": ..., "final_loss": ..., "device": "<gpu name>"}

Usage: python bench/torch_gpu_reference.py [--steps 200] [--warmup 20] [--batch 256]
       [--precision fp32|fp16_mixed|bf16_mixed] [--tf32]
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def info_nce(z1, z2, temperature):
    z1 = F.normalize(z1.float(), dim=1)
    z2 = F.normalize(z2.float(), dim=1)
    logits = z1 @ z2.t() / temperature
    labels = torch.arange(z1.shape[0], device=z1.device)
    return F.cross_entropy(logits, labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--input", type=int, default=3072)
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16_mixed", "bf16_mixed"])
    p.add_argument("--tf32", action="store_true")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("torch_gpu_reference: torch.cuda.is_available() is False")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    dev = torch.device("cuda")
    torch.manual_seed(0)
    d, b, h = args.input, args.batch, 512
    encoder = nn.Sequential(
        nn.Linear(d, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 128)
    ).to(dev)
    projector = nn.Sequential(nn.Linear(128, h), nn.ReLU(), nn.Linear(h, 128)).to(dev)
    params = list(encoder.parameters()) + list(projector.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)
    amp = {"fp16_mixed": torch.float16, "bf16_mixed": torch.bfloat16}.get(args.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "fp16_mixed")
    data = torch.randn(4096, d, device=dev)

    def step():
        idx = torch.randint(0, data.shape[0], (b,), device=dev)
        x = data[idx]
        x1 = x + 0.1 * torch.randn_like(x)
        x2 = x + 0.1 * torch.randn_like(x)
        with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
            z = projector(encoder(torch.cat([x1, x2], 0)))
            loss = info_nce(z[:b], z[b:], 0.1)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    loss = None
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "impl": "pytorch",
                "torch": torch.__version__,
                "precision": args.precision,
                "tf32": args.tf32,
                "batch": b,
                "steps": args.steps,
                "samples_per_s": args.steps * b / secs,
                "ms_per_step": secs * 1e3 / args.steps,
                "peak_device_memory_bytes": torch.cuda.max_memory_allocated(),
                "final_loss": loss.item(),
                "device": torch.cuda.get_device_name(0),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
