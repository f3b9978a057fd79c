#!/usr/bin/env python3
"""The fp32 GEMM rate this machine reaches, in ONNX Runtime and in PyTorch, on square products
and on the study's largest step shapes (batch 2048 = 1024 pairs, input 3072, output 128).

It answers how fast a step made of nothing but products could be: if both libraries run
their products at the same rate, no step can beat PyTorch's by more than what its non-product
work costs. Each library is timed if it imports, so run it with each environment:

    .venv/bin/python bench/gemm_peak.py            # ONNX Runtime (the project's venv)
    /tmp/torch-venv/bin/python bench/gemm_peak.py  # PyTorch

Median of 10-20 runs after 3 warm-up, 2 threads (--threads).
"""

import argparse
import time

import numpy as np

B, I, H = 2048, 3072, 128
# name: (shape of A, shape of B, transpose A, transpose B), as one Gemm node each.
STEP_SHAPES = {
    "X W^T    [B,I] x [H,I]^T": ([B, I], [H, I], False, True),
    "W X^T    [H,I] x [B,I]^T": ([H, I], [B, I], False, True),
    "dH^T X   [B,H]^T x [B,I]": ([B, H], [B, I], True, False),
    "X^T dH   [B,I]^T x [B,H]": ([B, I], [B, H], True, False),
}


def flops(sa, sb, ta, tb):
    m = sa[1] if ta else sa[0]
    k = sa[0] if ta else sa[1]
    n = sb[0] if tb else sb[1]
    return 2.0 * m * n * k


def median_time(run, reps):
    for _ in range(3):
        run()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def onnxruntime_timer(threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def timer(sa, sb, ta, tb, reps):
        m = sa[1] if ta else sa[0]
        n = sb[0] if tb else sb[1]
        node = helper.make_node("Gemm", ["A", "B"], ["Y"], transA=int(ta), transB=int(tb))
        graph = helper.make_graph(
            [node],
            "gemm",
            [helper.make_tensor_value_info("A", TensorProto.FLOAT, sa),
             helper.make_tensor_value_info("B", TensorProto.FLOAT, sb)],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), opts,
                                    providers=["CPUExecutionProvider"])
        feeds = {"A": np.random.rand(*sa).astype(np.float32),
                 "B": np.random.rand(*sb).astype(np.float32)}
        return median_time(lambda: sess.run(None, feeds), reps)

    return f"ONNX Runtime {ort.__version__}", timer


def torch_timer(threads):
    import torch

    torch.set_num_threads(threads)

    def timer(sa, sb, ta, tb, reps):
        a = torch.rand(*sa)
        b = torch.rand(*sb)
        a = a.t() if ta else a
        b = b.t() if tb else b
        with torch.no_grad():
            return median_time(lambda: a @ b, reps)

    return f"PyTorch {torch.__version__}", timer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    timers = []
    for make in (onnxruntime_timer, torch_timer):
        try:
            timers.append(make(a.threads))
        except ImportError:
            pass
    if not timers:
        raise SystemExit("neither onnxruntime (with onnx) nor torch imports here")
    cases = {f"square {n}": ([n, n], [n, n], False, False) for n in (1024, 2048, 3072)}
    cases.update(STEP_SHAPES)
    for name, timer in timers:
        print(f"{name}, {a.threads} threads")
        for case, (sa, sb, ta, tb) in cases.items():
            reps = 10 if case.startswith("square") else 20
            t = timer(sa, sb, ta, tb, reps)
            print(f"  {case:28s} {t * 1e3:8.2f} ms  {flops(sa, sb, ta, tb) / t / 1e9:6.1f} GFLOP/s")


if __name__ == "__main__":
    main()
