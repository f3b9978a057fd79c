#!/usr/bin/env python3
"""Independent PyTorch reference for cbound's ResNet encoders (tests/fixtures/resnet_reference.json).

Nothing of cbound is imported. The ResNet is written out below in torchvision's layout
(BasicBlock, conv layers without bias, `downsample.0/1`) with a width multiplier, and its
parameter names and shapes at width 1 are checked against torchvision's own resnet18/resnet34
(minus `fc` and `num_batches_tracked`), which are stored too.

Inputs are not random: every tensor is a deterministic Weyl sequence that the Rust test
recomputes (see `det` below), so the fixture needs no parameter bytes. Tensor k (its index in
the model's list: parameters in `named_parameters` order, then running means/variances in
`named_buffers` order) element j is
    u = (((j + 1) * 2654435761 + (k + 1) * 97531) mod 2^32) / 2^32
    value = float32(lo + (hi - lo) * u)
with (lo, hi) = +-sqrt(6 / fan_out) for convolutions (kaiming-normal's variance),
[0.8, 1.2] for BN weights, [-0.1, 0.1] for BN biases and running means, [0.8, 1.2] for running
variances, and [-1, 1] for the input batch (tensor index k = 1000).

Case `cifar`: ResNet-18, CIFAR stem, width 0.125, input [8, 3, 16, 16] (two views of 4 samples
stacked as cbound's step does), float64, train mode:
  * `embedding`: the pooled features of all 8 rows (batch statistics);
  * `loss`: symmetric NT-Xent, t = 0.5, z1 = rows 0..4, z2 = rows 4..8;
  * `grads`: d loss / d p for a few parameters (the first 1024 entries of big ones);
  * `buffers`: every running mean/variance after the forward pass (momentum 0.1, unbiased var);
  * `eval_embedding`: after one SGD step (lr 0.1, no momentum or decay), eval-mode features of
    rows 0..4 (running statistics).
Case `imagenet`: same with the ImageNet stem (7x7/2 + max-pool), eval-mode features only.

Run: /path/to/python-with-torch scripts/resnet_fixture.py   (from the repository root)
"""
import json

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

torch.set_default_dtype(torch.float64)


def det(k, shape, lo, hi):
    n = int(np.prod(shape))
    j = np.arange(n, dtype=np.uint64)
    u = (((j + np.uint64(1)) * np.uint64(2654435761) + np.uint64((k + 1) * 97531)) % np.uint64(2**32)).astype(np.float64) / 2.0**32
    return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idn = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idn)


class ResNet(nn.Module):
    def __init__(self, blocks, width, stem, in_ch=3):
        super().__init__()
        w = [max(1, round(b * width)) for b in (64, 128, 256, 512)]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_ch, w[0], 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_ch, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem == "imagenet" else nn.Identity()
        inplanes = w[0]
        for i, (planes, n) in enumerate(zip(w, blocks)):
            layer = []
            for b in range(n):
                stride = 2 if i > 0 and b == 0 else 1
                layer.append(BasicBlock(inplanes, planes, stride))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


def tensors(model):
    """Parameters, then running statistics: cbound's init_params order."""
    out = [(n, p, "param") for n, p in model.named_parameters()]
    out += [(n, b, "buffer") for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")]
    return out


def fill(model):
    for k, (name, t, _) in enumerate(tensors(model)):
        shape = tuple(t.shape)
        if t.dim() == 4:
            fan_out = shape[0] * shape[2] * shape[3]
            b = (6.0 / fan_out) ** 0.5
            lo, hi = -b, b
        elif name.endswith("running_var") or name.endswith(".weight"):
            lo, hi = 0.8, 1.2
        else:
            lo, hi = -0.1, 0.1
        with torch.no_grad():
            t.copy_(torch.from_numpy(det(k, shape, lo, hi).astype(np.float64)))


def nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / t
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    return F.cross_entropy(sim, target)


def flat(t, limit=None):
    v = t.detach().reshape(-1).tolist()
    return v if limit is None else v[:limit]


def names_and_shapes(model):
    return [[n, list(t.shape)] for n, t, _ in tensors(model)]


def torchvision_names(ctor):
    m = ctor(weights=None)
    out = [[n, list(p.shape)] for n, p in m.named_parameters() if not n.startswith("fc.")]
    out += [[n, list(b.shape)] for n, b in m.named_buffers() if not n.endswith("num_batches_tracked")]
    return out


def main():
    # The hand-written model has torchvision's names and shapes (width 1, ImageNet stem).
    tv18 = torchvision_names(torchvision.models.resnet18)
    tv34 = torchvision_names(torchvision.models.resnet34)
    assert names_and_shapes(ResNet([2, 2, 2, 2], 1.0, "imagenet")) == tv18
    assert names_and_shapes(ResNet([3, 4, 6, 3], 1.0, "imagenet")) == tv34

    x = torch.from_numpy(det(1000, (8, 3, 16, 16), -1.0, 1.0).astype(np.float64))
    cases = {}
    for stem in ("cifar", "imagenet"):
        model = ResNet([2, 2, 2, 2], 0.125, stem)
        fill(model)
        case = {"names": names_and_shapes(model)}
        if stem == "cifar":
            model.train()
            h = model(x)
            loss = nt_xent(h[:4], h[4:], 0.5)
            loss.backward()
            case["embedding"] = flat(h)
            case["loss"] = loss.item()
            params = dict(model.named_parameters())
            case["grads"] = {
                n: flat(params[n].grad, 1024)
                for n in [
                    "conv1.weight",
                    "bn1.weight",
                    "bn1.bias",
                    "layer2.0.downsample.0.weight",
                    "layer2.0.downsample.1.weight",
                    "layer4.1.conv2.weight",
                    "layer4.1.bn2.weight",
                ]
            }
            case["buffers"] = {
                n: flat(b) for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")
            }
            with torch.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
        model.eval()
        with torch.no_grad():
            case["eval_embedding"] = flat(model(x[:4]))
        cases[stem] = case

    out = {
        "generator": f"scripts/resnet_fixture.py (PyTorch {torch.__version__}, torchvision {torchvision.__version__}, float64)",
        "width": 0.125,
        "input_shape": [8, 3, 16, 16],
        "temperature": 0.5,
        "lr": 0.1,
        "cases": cases,
        "torchvision_resnet18": tv18,
        "torchvision_resnet34": tv34,
    }
    with open("tests/fixtures/resnet_reference.json", "w") as f:
        json.dump(out, f, separators=(",", ":"))


if __name__ == "__main__":
    main()
