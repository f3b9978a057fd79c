"""The Beyond-Normal benchmark's table from a run of pipelines/mi-benchmark.yaml.

Run by that pipeline's `table` stage (a gathering `command` stage): reads the inputs manifest
cbound passes in $CBOUND_INPUTS, matches every estimate to the task instance it was computed on
(through the estimate's meta.json), takes bmi's task id and name from the samples' schema
metadata, and writes into $CBOUND_OUT:

- estimates.csv: every estimate (task, N, replicate, estimator, value, true MI, error message);
- mi_benchmark.csv: per task, N and estimator, the mean over the seeds, its sd, the error
  mean - true, log(mean / true) and `solved`: |log(mean / true)| < log 1.5, the paper's
  criterion (a mean at or below 0 never solves a task);
- mi_benchmark.md: one table per N (mean and error in nats, a check mark where solved, the
  solved count per estimator) and, per task family, how many of its tasks each estimator
  solves at the largest N, the tasks at most three estimators solve (and which), and
  head-to-head counts (on how many tasks the Euclidean KSG is
  closer to the truth than the max-norm one, algorithm 2 than 1, the bias-corrected Gaussian
  than the plug-in, asinh than none);
- metrics.json: `tasks`, and `solved.<estimator>.n<N>` for every estimator and N.

Estimator labels: ksg1 / ksg2 (max-norm), ksg1-euclid / ksg2-euclid, gaussian, gaussian-bc
(bias-corrected), histogram; a trained critic is its kind (`infonce_critic`, with `-concat` for
the concatenated critic and `-c<c>` for a score bound); any other estimator is its name
followed by its settings; a
suffix `+asinh` marks estimates from a stage that applies asinh first (`preprocess.asinh`).
"""

import csv
import json
import math
import os
import statistics
from collections import defaultdict

import pyarrow.parquet as pq

SOLVED = math.log(1.5)
TRANSFORM_PREFIXES = ["normal_cdf", "half_cube", "asinh", "wiggly", "spiral", "swissroll_x"]


def family(task_id: str) -> str:
    """The task's family: its transforms and base kind without sizes (`spiral @ 2-pair`)."""
    prefixes = []
    rest = task_id
    progress = True
    while progress:
        progress = False
        for p in TRANSFORM_PREFIXES:
            if rest.startswith(p + "-"):
                prefixes.append(p)
                rest = rest[len(p) + 1:]
                progress = True
    base = {
        "1v1-normal": "bivariate normal",
        "1v1-additive": "additive noise",
        "1v1-bimodal": "bimodal",
        "multinormal-dense": "dense normal",
        "multinormal-sparse": "2-pair normal",
        "student-identity": "Student-t",
    }
    kind = next((v for k, v in base.items() if rest.startswith(k)), rest)
    names = {"normal_cdf": "normal CDF", "half_cube": "half-cube", "swissroll_x": "Swiss roll"}
    return " @ ".join([names.get(p, p) for p in prefixes] + [kind])


def label(estimator: str, params: dict, asinh: bool) -> str:
    if estimator == "ksg":
        out = f"ksg{params.get('algorithm', 1)}"
        if params.get("metric") == "euclidean":
            out += "-euclid"
        if params.get("k", 3) != 3:
            out += f"-k{params['k']}"
    elif estimator == "gaussian":
        out = "gaussian-bc" if params.get("bias_correction") else "gaussian"
    elif estimator == "histogram" and params.get("bins", 16) == 16:
        out = "histogram"
    elif estimator.endswith("_critic"):
        # The architecture and the score bound tell critics apart; the other settings are the
        # pipeline's (its file says which).
        out = estimator
        if params.get("critic") == "concat":
            out += "-concat"
        if params.get("score_bound") is not None:
            out += f"-c{params['score_bound']}"
    else:
        rest = ",".join(f"{k}={v}" for k, v in params.items())
        out = f"{estimator}({rest})" if rest else estimator
    return out + ("+asinh" if asinh else "")


def fmt(v: float) -> str:
    return f"{v:.3f}"


def main() -> None:
    inputs = json.load(open(os.environ["CBOUND_INPUTS"]))
    tasks = {}
    for item in inputs:
        samples = os.path.join(item["dir"], "samples.parquet")
        if "true_mi_nats" in item["metrics"] and os.path.exists(samples):
            meta = pq.read_schema(samples).metadata or {}
            m = item["metrics"]
            tasks[item["instance"]] = {
                "task_id": meta.get(b"cbound.task_id", item["instance"].encode()).decode(),
                "task_name": meta.get(b"cbound.task_name", item["instance"].encode()).decode(),
                "true": m["true_mi_nats"],
                "n": int(m["n"]),
                "dims": f"{int(m['dim_x'])}x{int(m['dim_y'])}",
            }
    rows = []
    for item in inputs:
        path = os.path.join(item["dir"], "mi_estimates.parquet")
        if not os.path.exists(path):
            continue
        meta = json.load(open(os.path.join(item["dir"], "meta.json")))
        source = meta["key_inputs"]["inputs"][0]["instance"]
        task = tasks[source]
        preprocess = meta["key_inputs"]["params"].get("preprocess") or {}
        asinh = bool(preprocess.get("asinh", False))
        replicate = (item.get("labels") or {}).get("replicate", 0)
        for r in pq.read_table(path).to_pylist():
            params = json.loads(r["params"]) if r["params"] else {}
            params.pop("name", None)
            failed = r["error"] or r["nats"] is None or math.isnan(r["nats"])
            rows.append({
                **task,
                "family": family(task["task_id"]),
                "replicate": int(replicate),
                "estimator": label(r["estimator"], params, asinh),
                "nats": float("nan") if failed else r["nats"],
                "failure": r["error"] or "",
            })
    out = os.environ["CBOUND_OUT"]
    fields = ["task_id", "task_name", "family", "dims", "n", "replicate", "estimator", "true",
              "nats", "failure"]
    with open(os.path.join(out, "estimates.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    groups = defaultdict(list)
    for r in rows:
        groups[(r["task_id"], r["n"], r["estimator"])].append(r)
    summary = []
    for (task_id, n, est), rs in groups.items():
        values = [r["nats"] for r in rs if not math.isnan(r["nats"])]
        true = rs[0]["true"]
        mean = statistics.fmean(values) if len(values) == len(rs) else float("nan")
        ratio = math.log(mean / true) if mean > 0 and true > 0 else float("nan")
        summary.append({
            "task_id": task_id,
            "task_name": rs[0]["task_name"],
            "family": rs[0]["family"],
            "dims": rs[0]["dims"],
            "n": n,
            "estimator": est,
            "seeds": len(rs),
            "true": true,
            "mean": mean,
            "sd": statistics.stdev(values) if len(values) > 1 and len(values) == len(rs) else float("nan"),
            "error": mean - true,
            "log_ratio": ratio,
            "solved": bool(not math.isnan(ratio) and abs(ratio) < SOLVED),
            "failure": next((r["failure"] for r in rs if r["failure"]), ""),
        })
    with open(os.path.join(out, "mi_benchmark.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0].keys()))
        w.writeheader()
        w.writerows(summary)

    by = {(s["task_id"], s["n"], s["estimator"]): s for s in summary}
    order = []
    for r in rows:  # the pipeline's order of tasks (bmi's) and estimators
        if r["task_id"] not in order:
            order.append(r["task_id"])
    estimators = []
    for r in rows:
        if r["estimator"] not in estimators:
            estimators.append(r["estimator"])
    sizes = sorted({s["n"] for s in summary})
    metrics = {"tasks": len(order)}
    lines = []
    for n in sizes:
        seeds = sorted({s["seeds"] for s in summary if s["n"] == n})
        lines.append(f"N = {n}, {'/'.join(map(str, seeds))} seeds: mean estimate (error) in nats; "
                     "✓: |log(mean / true)| < log 1.5")
        lines.append("")
        lines.append("| task | dims | true MI | " + " | ".join(estimators) + " |")
        lines.append("|---|---|---|" + "---|" * len(estimators))
        for t in order:
            cells = []
            first = next(s for s in summary if s["task_id"] == t)
            for e in estimators:
                s = by.get((t, n, e))
                if s is None or math.isnan(s["mean"]):
                    cells.append("n/a")
                else:
                    mark = " ✓" if s["solved"] else ""
                    cells.append(f"{fmt(s['mean'])} ({s['error']:+.3f}){mark}")
            lines.append(f"| {first['task_name']} | {first['dims']} | {fmt(first['true'])} | "
                         + " | ".join(cells) + " |")
        counts = []
        for e in estimators:
            c = sum(1 for t in order if by.get((t, n, e), {}).get("solved"))
            metrics[f"solved.{e}.n{n}"] = c
            counts.append(f"{c} / {len(order)}")
        lines.append("| **solved** | | | " + " | ".join(counts) + " |")
        lines.append("")
    n = sizes[-1]
    families = []
    for t in order:
        f = family(t)
        if f not in families:
            families.append(f)
    lines.append(f"Tasks solved per family at N = {n}:")
    lines.append("")
    lines.append("| family | tasks | " + " | ".join(estimators) + " |")
    lines.append("|---|---|" + "---|" * len(estimators))
    for f in families:
        ts = [t for t in order if family(t) == f]
        cells = [str(sum(1 for t in ts if by.get((t, n, e), {}).get("solved"))) for e in estimators]
        lines.append(f"| {f} | {len(ts)} | " + " | ".join(cells) + " |")
    # The hard tasks: those at most three estimators solve, with the ones that do, at the
    # largest N (where a new estimator earns its place, or none does).
    hard = []
    for t in order:
        solvers = [e for e in estimators if by.get((t, n, e), {}).get("solved")]
        if len(solvers) <= 3:
            first = next(s for s in summary if s["task_id"] == t)
            hard.append(f"| {first['task_name']} | {first['dims']} | {', '.join(solvers) or 'none'} |")
    metrics["hard_tasks"] = len(hard)
    if hard:
        lines.append("")
        lines.append(f"Tasks solved by at most three estimators at N = {n}, and which:")
        lines.append("")
        lines.append("| task | dims | solved by |")
        lines.append("|---|---|---|")
        lines.extend(hard)
    # Head to head: on how many tasks (where both have a value) each of two estimators is
    # closer to the truth, at the largest N.
    pairs = [("ksg1-euclid", "ksg1", True), ("ksg2-euclid", "ksg2", True), ("ksg2", "ksg1", False),
             ("gaussian-bc", "gaussian", False), ("ksg2+asinh", "ksg2", False),
             ("ksg2-euclid+asinh", "ksg2-euclid", False), ("nwj_critic", "infonce_critic", False),
             ("infonce_critic", "ksg2-euclid", True)]
    duels = []
    for a, b, multi in pairs:
        if a not in estimators or b not in estimators:
            continue
        wins = losses = ties = 0
        for t in order:
            sa, sb = by.get((t, n, a)), by.get((t, n, b))
            if sa is None or sb is None or (multi and sa["dims"] == "1x1"):
                continue
            ea, eb = abs(sa["error"]), abs(sb["error"])
            if math.isnan(ea) or math.isnan(eb):
                continue
            wins, losses, ties = wins + (ea < eb), losses + (eb < ea), ties + (ea == eb)
        duels.append(f"| {a} | {b} | {'multi-dimensional' if multi else 'all'} | {wins} | {losses} | {ties} |")
        metrics[f"closer.{a}.vs.{b}"] = wins
    if duels:
        lines.append("")
        lines.append(f"Head to head at N = {n}: tasks on which A's mean is closer to the truth than B's:")
        lines.append("")
        lines.append("| A | B | tasks | A closer | B closer | equal |")
        lines.append("|---|---|---|---|---|---|")
        lines.extend(duels)
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "mi_benchmark.md"), "w") as f:
        f.write(text)
    print(text)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f)


if __name__ == "__main__":
    main()
