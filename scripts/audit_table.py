"""The certification audit's table: how often each family's certified values cross the truth.

Run by the `audit` stage of pipelines/certification-audit.yaml (a gathering `command` stage):
reads the inputs manifest cbound passes in $CBOUND_INPUTS, takes every `bound` instance (those
that report `certified_violations`), groups them by family (the stage id) and sample size `n`
(the sweep label), and writes audit.md, audit.csv and audit.json into $CBOUND_OUT, printing the
table too. Also runs on a finished run directory:

    python3 scripts/audit_table.py outputs/certification-audit/latest

Columns per family and n:
  instances           bound instances that ran
  certified_above     fraction with ANY certified value beyond the exact truth (the promise
                      is <= 1 - confidence)
  point_above         fraction whose point values (what the study reports) cross the truth
  nonvacuous_iuz      fraction with a positive certified lower bound on the family's quantity
  nonvacuous_where.. the same among instances whose true value exceeds 0.1 nats
  mean_gap            mean |point - certified| of the family's main bound, in nats: the price
                      of certification
  inconsistent        fraction flagged inconsistent
"""

import csv
import json
import math
import os
import sys

import pyarrow.parquet as pq

# Which bounds.parquet row carries each family's main certified quantity.
MAIN = {
    "I(U;Z)": ("term", "I(U;Z)"),
    "I(U;Y)": ("term", "I(U;Y)"),
    "I(X;Y|Z)": ("term", "I(X;Y|Z)"),
}


def items_from_run(run_dir):
    """The manifest entries of every bound instance in a finished run directory."""
    items = []
    for stage in sorted(os.listdir(run_dir)):
        sdir = os.path.join(run_dir, stage)
        if not os.path.isdir(sdir):
            continue
        for inst in sorted(os.listdir(sdir)):
            meta_path = os.path.join(sdir, inst, "meta.json")
            if not os.path.exists(meta_path):
                continue
            meta = json.load(open(meta_path))
            if meta.get("kind") != "bound":
                continue
            items.append({
                "stage": meta["stage"],
                "instance": meta["instance"],
                "dir": os.path.join(sdir, inst),
                "metrics": meta.get("metrics", {}),
                "labels": meta.get("labels", {}),
            })
    return items


def family_rows(items):
    groups = {}
    for item in items:
        metrics = item.get("metrics", {})
        if "certified_violations" not in metrics:
            continue
        labels = item.get("labels") or item.get("sweep") or {}
        n = labels.get("n")
        key = (item["stage"], n)
        g = groups.setdefault(key, {"instances": 0, "cert_above": 0, "point_above": 0,
                                    "nonvacuous": 0, "gaps": [], "inconsistent": 0,
                                    "informative": 0, "informative_certified": 0,
                                    "confidence": metrics.get("confidence")})
        g["instances"] += 1
        g["cert_above"] += int(metrics["certified_violations"] > 0)
        g["inconsistent"] += int(metrics.get("inconsistencies", 0) > 0)
        rows = pq.read_table(os.path.join(item["dir"], "bounds.parquet")).to_pylist()
        point_above = any(r.get("violated") for r in rows if r.get("name") == "term")
        point_above = point_above or any(
            r.get("violated") for r in rows if r.get("status") == "valid")
        g["point_above"] += int(point_above)
        main = [r for r in rows if r.get("name") == "term" and r.get("certified_nats") is not None]
        main.sort(key=lambda r: r["lhs"] != "I(U;Z)")
        if main:
            r = main[0]
            g["lhs"] = r["lhs"]
            g["gaps"].append(abs(r["value_nats"] - r["certified_nats"]))
            if r["side"] == "lower":
                g["nonvacuous"] += int(r["certified_nats"] > 0)
                # Certifying nothing must not pass: where there is something to certify.
                if r.get("truth_nats") is not None and r["truth_nats"] > 0.1:
                    g["informative"] += 1
                    g["informative_certified"] += int(r["certified_nats"] > 0)
            else:
                g["nonvacuous"] += int(r.get("certification") == "certified")
    out = []
    for (family, n), g in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        k = g["instances"]
        out.append({
            "family": family,
            "n": n,
            "quantity": g.get("lhs", ""),
            "instances": k,
            "confidence": g["confidence"],
            "certified_above": g["cert_above"] / k,
            "point_above": g["point_above"] / k,
            "nonvacuous": g["nonvacuous"] / k,
            "mean_gap": sum(g["gaps"]) / len(g["gaps"]) if g["gaps"] else math.nan,
            "truth_above_0.1": g["informative"],
            "nonvacuous_where_truth_above_0.1": (g["informative_certified"] / g["informative"]
                                                 if g["informative"] else math.nan),
            "inconsistent": g["inconsistent"] / k,
        })
    return out


def markdown(rows):
    head = ("| family | n | quantity | instances | certified above truth | point above truth "
            "| non-vacuous | non-vacuous where truth > 0.1 | mean gap (nats) | inconsistent |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    def informative(r):
        k = r["truth_above_0.1"]
        return f"{r['nonvacuous_where_truth_above_0.1']:.3f} of {k}" if k else "-"
    body = "".join(
        f"| {r['family']} | {r['n']} | {r['quantity']} | {r['instances']} "
        f"| {r['certified_above']:.3f} | {r['point_above']:.3f} | {r['nonvacuous']:.3f} "
        f"| {informative(r)} | {r['mean_gap']:.3f} | {r['inconsistent']:.3f} |\n"
        for r in rows)
    total = sum(r["instances"] for r in rows)
    level = next((r["confidence"] for r in rows if r["confidence"] is not None), None)
    worst = max((r["certified_above"] for r in rows), default=math.nan)
    foot = (f"\n{total} instances at confidence {level}: the promise is a rate of at most "
            f"{1 - level:.3f} per family; the worst family/n has {worst:.3f}.\n") if level else ""
    return head + body + foot


def main():
    if len(sys.argv) > 1:
        items, out_dir = items_from_run(sys.argv[1]), None
    else:
        items = json.load(open(os.environ["CBOUND_INPUTS"]))
        out_dir = os.environ["CBOUND_OUT"]
    rows = family_rows(items)
    if not rows:
        sys.exit("audit: no bound instance with certified_violations among the inputs")
    text = markdown(rows)
    print(text, end="")
    if out_dir:
        with open(os.path.join(out_dir, "audit.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out_dir, "audit.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        # JSON has no NaN: a quantity that does not apply is null.
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                  for k, v in r.items()} for r in rows]
        with open(os.path.join(out_dir, "audit.json"), "w") as f:
            json.dump(clean, f, indent=1)
        worst = max(r["certified_above"] for r in rows)
        json.dump({"families": len({r["family"] for r in rows}),
                   "instances": sum(r["instances"] for r in rows),
                   "worst_certified_above": worst},
                  open(os.path.join(out_dir, "metrics.json"), "w"))


if __name__ == "__main__":
    main()
