"""ResNet-18 training step: cbound against PyTorch eager, alternating rounds in one run.

Both sides: ResNet-18 with the CIFAR stem (3x3 conv stride 1, no max-pool), BatchNorm in
training mode, width multiplier --width, input [2B, 3, S, S] (both views of B samples as one
batch), projector 512w-512-128 (ReLU), NT-Xent t = 0.5, SGD lr 0.05 momentum 0.9 weight decay
5e-4, --threads intra-op threads (torch.set_num_threads). Each round times --steps steps after
--warmup steps; PyTorch and cbound (crates/onnx/examples/resnet_bench.rs, run as a subprocess;
its session creation is not timed) alternate for --rounds rounds. Prints every round and the
ratio of the medians (cbound / PyTorch; below 1 means cbound is faster).

Usage (from the repository root, with a Python that has torch):
  cargo build --profile release -p cbound-onnx --example resnet_bench
  python bench/resnet_step.py [--rounds 3] [--steps 10] [--warmup 2] [--batch 32] [--width 1]
"""

import argparse
import json
import os
import statistics
import subprocess
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idn = x if self.downsample is None else self.downsample(x)
        return F.relu(out + idn)


class ResNet18Cifar(nn.Module):
    def __init__(self, width):
        super().__init__()
        w = [max(1, round(b * width)) for b in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        layers, inplanes = [], w[0]
        for i, planes in enumerate(w):
            for b in range(2):
                layers.append(BasicBlock(inplanes, planes, 2 if i > 0 and b == 0 else 1))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.dim = inplanes

    def forward(self, x):
        return self.layers(F.relu(self.bn1(self.conv1(x)))).mean(dim=(2, 3))


def nt_xent(z, n, t):
    z = F.normalize(z, dim=1)
    sim = z @ z.T / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def torch_round(model, opt, xs, n, steps, warmup):
    times = []
    for i in range(warmup + steps):
        x = xs[i % len(xs)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nt_xent(model(x), n, 0.5)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--profile", action="store_true", help="also print cbound's operator shares")
    p.add_argument("--no-spin", action="store_true", help="ONNX Runtime's idle threads sleep (shared cores)")
    p.add_argument("--plain-convs", action="store_true",
                   help="cbound runs every convolution as the plain Conv (none through ONNX Runtime's NCHWc kernels)")
    p.add_argument(
        "--bin",
        default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release/examples/resnet_bench"),
    )
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    enc = ResNet18Cifar(a.width)
    model = nn.Sequential(enc, nn.Linear(enc.dim, 512), nn.ReLU(), nn.Linear(512, 128))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    xs = [torch.randn(2 * a.batch, 3, a.size, a.size) for _ in range(4)]
    cmd = [a.bin, "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads),
           "--batch", str(a.batch), "--width", str(a.width), "--size", str(a.size)]
    if a.no_spin:
        cmd.append("--no-spin")
    if a.plain_convs:
        cmd.append("--plain-convs")
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch} (x2 views), width {a.width}, {a.size}x{a.size}"
          + (", ONNX Runtime without spinning" if a.no_spin else ""))
    t_ms, c_ms, last = [], [], None
    for r in range(a.rounds):
        t_ms.append(torch_round(model, opt, xs, a.batch, a.steps, a.warmup))
        profile = a.profile and r == a.rounds - 1
        out = subprocess.run(cmd + (["--profile"] if profile else []), capture_output=True, text=True, check=True)
        last = json.loads(out.stdout.strip().splitlines()[-1])
        c_ms.append(last["ms_per_step"])
        print(f"round {r + 1}: pytorch {t_ms[-1]:.1f} ms/step, cbound {c_ms[-1]:.1f} ms/step")
    tm, cm = statistics.median(t_ms), statistics.median(c_ms)
    block = last.get("conv_block")
    convs = f"NCHWc convolutions in blocks of {block}" if block else "plain convolutions"
    print(f"median: pytorch {tm:.1f} ms/step, cbound {cm:.1f} ms/step, ratio cbound/pytorch {cm / tm:.2f} "
          f"(ONNX Runtime {last['ort']}, {convs}, {last['matmul_gflop']:.1f} GFLOP of Conv/Gemm per cbound step)")
    if last.get("ops"):
        print("cbound kernel time by operator:", ", ".join(f"{k} {100 * v:.1f}%" for k, v in last["ops"]))


if __name__ == "__main__":
    main()
