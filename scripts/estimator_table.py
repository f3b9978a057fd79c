"""Gather estimate_mi results and the synthetic tasks' true MI into one accuracy table.

Run by the `table` stage of pipelines/estimator-accuracy.yaml (a gathering `command` stage):
reads the inputs manifest cbound passes in $CBOUND_INPUTS, matches every estimate to the
task it was computed on (through the estimate's meta.json), and writes
estimator_accuracy.md (the README table) and estimator_accuracy.csv into $CBOUND_OUT."""

import csv
import json
import math
import os

import pyarrow.parquet as pq


def main() -> None:
    inputs = json.load(open(os.environ["CBOUND_INPUTS"]))
    truth = {i["instance"]: i["metrics"] for i in inputs if "true_mi_nats" in i["metrics"]}
    rows = []
    for item in inputs:
        path = os.path.join(item["dir"], "mi_estimates.parquet")
        if not os.path.exists(path):
            continue
        meta = json.load(open(os.path.join(item["dir"], "meta.json")))
        task = meta["key_inputs"]["inputs"][0]["instance"]
        true = truth[task]["true_mi_nats"]
        for r in pq.read_table(path).to_pylist():
            params = json.loads(r["params"]) if r["params"] else {}
            name = r["estimator"]
            if name == "ksg":
                name = f"ksg{params.get('algorithm', 1)}"
            rows.append({
                "task": task,
                "dims": f"{int(truth[task]['dim_x'])}x{int(truth[task]['dim_y'])}",
                "true_nats": true,
                "estimator": name,
                "nats": r["nats"],
                "error": r["nats"] - true,
                "ci_low": r["ci_low"],
                "ci_high": r["ci_high"],
                "failure": r["error"],
            })
    out = os.environ["CBOUND_OUT"]
    with open(os.path.join(out, "estimator_accuracy.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    estimators = sorted({r["estimator"] for r in rows})
    tasks = sorted({(r["task"], r["dims"], r["true_nats"]) for r in rows}, key=lambda t: (t[0].split("@")[0], t[2]))
    lines = [
        "| task | dims | true MI | " + " | ".join(estimators) + " |",
        "|---|---|---|" + "---|" * len(estimators),
    ]
    for task, dims, true in tasks:
        cells = []
        for e in estimators:
            match = [r for r in rows if r["task"] == task and r["estimator"] == e]
            if not match or match[0]["failure"] or math.isnan(match[0]["nats"]):
                cells.append("n/a")
            else:
                cells.append(f"{match[0]['nats']:.3f} ({match[0]['error']:+.3f})")
        lines.append(f"| {task} | {dims} | {true:.3f} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "estimator_accuracy.md"), "w") as f:
        f.write(text)
    print(text)
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"estimates": len(rows)}, f)


if __name__ == "__main__":
    main()
