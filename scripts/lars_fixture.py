#!/usr/bin/env python3
"""Independent PyTorch reference for cbound's LARS update.

Writes tests/fixtures/lars_reference.json: for a few settings, a tiny MLP (6 -> 5 -> ReLU -> 3,
PyTorch nn.Linear layout) trained for 6 steps on a fixed regression batch (MSE) with LARS as
the SimCLR reference implements it (google-research/simclr `lars_optimizer.py`, classic
momentum, no Nesterov), written out below as a torch.optim.Optimizer:

    g' = g + wd * w                                  (adapted parameters only)
    r  = eta * ||w|| / ||g'||   (1 where ||w|| = 0 or ||g'|| = 0; adapted parameters only)
    v  = momentum * v + lr * r * g'
    w  = w - v

Parameters in the exempt group (biases, with `exclude_bias_and_norm`) get neither the decay
nor the ratio: v = momentum * v + lr * g. Each step records the learning rate, the gradients
PyTorch's autograd gave (cbound's test feeds them to its graph), the parameters and the
momentum buffers after the step. Everything is float64.

Run from the repository root: /path/to/torch/python scripts/lars_fixture.py
Nothing of cbound is imported.
"""
import json
import math

import torch


class SimclrLars(torch.optim.Optimizer):
    def __init__(self, params, lr, momentum, eta, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, eta=eta,
                                      weight_decay=weight_decay, exempt=False))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, mom, eta, wd = group["lr"], group["momentum"], group["eta"], group["weight_decay"]
            for p in group["params"]:
                grad = p.grad.clone()
                trust = torch.ones((), dtype=p.dtype)
                if not group["exempt"]:
                    if wd:
                        grad = grad + wd * p
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(grad)
                    one = torch.ones((), dtype=p.dtype)
                    trust = torch.where(w_norm > 0,
                                        torch.where(g_norm > 0, eta * w_norm / g_norm, one),
                                        one)
                state = self.state[p]
                v = state.get("v", torch.zeros_like(p))
                v = mom * v + (lr * trust) * grad
                state["v"] = v
                p.sub_(v)


def flat(t):
    return [float(x) for x in t.detach().reshape(-1)]


def case(name, momentum, eta, weight_decay, exclude, lrs, zero_last_bias, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    net = net.double()
    if zero_last_bias:
        with torch.no_grad():
            net[2].bias.zero_()  # ||w|| = 0: the trust ratio falls back to 1
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randn(8, 3, dtype=torch.float64)
    named = [("enc.0.weight", net[0].weight, "weight"), ("enc.0.bias", net[0].bias, "bias"),
             ("enc.2.weight", net[2].weight, "weight"), ("enc.2.bias", net[2].bias, "bias")]
    weights = [p for _, p, role in named if role == "weight" or not exclude]
    exempt = [p for _, p, role in named if role == "bias" and exclude]
    groups = [dict(params=weights)]
    if exempt:
        groups.append(dict(params=exempt, exempt=True))
    opt = SimclrLars(groups, lr=lrs[0], momentum=momentum, eta=eta, weight_decay=weight_decay)
    out = dict(name=name, momentum=momentum, eta=eta, weight_decay=weight_decay,
               exclude_bias_and_norm=exclude,
               params=[dict(name=n, shape=list(p.shape), role=r, init=flat(p))
                       for n, p, r in named],
               steps=[])
    for lr in lrs:
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.zero_grad()
        loss = torch.mean((net(x) - y) ** 2)
        loss.backward()
        grads = [flat(p.grad) for _, p, _ in named]
        opt.step()
        out["steps"].append(dict(
            lr=lr, loss=float(loss.detach()), grads=grads,
            params_after=[flat(p) for _, p, _ in named],
            momentum_after=[flat(opt.state[p]["v"]) for _, p, _ in named]))
    return out


def main():
    # SimCLR's rule lr = 0.3 * batch / 256 at batch 1024 is 1.2; warm-up then a cosine piece.
    warm_cos = [0.4, 0.8, 1.2] + [0.6 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)]
    cases = [
        case("simclr_defaults", 0.9, 1e-3, 1e-6, True, warm_cos, False, 0),
        case("all_adapted", 0.5, 0.02, 0.1, False, warm_cos, True, 1),
        case("no_momentum", 0.0, 0.01, 0.01, True, warm_cos, False, 2),
    ]
    with open("tests/fixtures/lars_reference.json", "w") as f:
        json.dump(dict(source="scripts/lars_fixture.py", torch=torch.__version__, cases=cases), f,
                  indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
