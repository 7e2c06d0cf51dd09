#!/usr/bin/env python3
"""The analysis method of `clockpath analyze`, in pandas, for the speed comparison in
benches/analyze.rs: read the CSV trace, assemble chains by delta_chain_id (stage times →
segment durations), then per session and per env/governor/cstate group: reject runs beyond
±3σ from the median of the first segment, and report median, SD and a B = 500 percentile
bootstrap CI of the median for every segment and the total."""
import sys

import numpy as np
import pandas as pd

STAGES = ["switch_entry", "first_read", "baseline_recalc"]


def describe(df, rng):
    ref = df["s1"].to_numpy()
    m, sd = np.median(ref), ref.std(ddof=1)
    kept = df[np.abs(ref - m) <= 3 * sd]
    out = {}
    for col in ["s1", "s2", "total"]:
        x = kept[col].to_numpy()
        boots = np.empty(500)
        for b in range(500):
            boots[b] = np.median(x[rng.integers(0, len(x), len(x))])
        out[col] = (len(x), np.median(x), x.std(ddof=1), np.percentile(boots, 2.5), np.percentile(boots, 97.5))
    return out


def main(path):
    df = pd.read_csv(path)
    wide = df.pivot_table(index=["session_id", "delta_chain_id"], columns="probe_name", values="timestamp_ns", aggfunc="first")
    labels = df[df.probe_name == STAGES[0]].set_index(["session_id", "delta_chain_id"])[["env", "governor", "cstate"]]
    wide = wide.dropna(subset=STAGES).join(labels)
    wide["s1"] = wide["first_read"] - wide["switch_entry"]
    wide["s2"] = wide["baseline_recalc"] - wide["first_read"]
    wide["total"] = wide["baseline_recalc"] - wide["switch_entry"]
    rng = np.random.default_rng(1)
    results = {}
    for sess, g in wide.groupby(level=0):
        results[("session", sess)] = describe(g, rng)
    for dim in ["env", "governor", "cstate"]:
        for v, g in wide.groupby(dim):
            results[(dim, v)] = describe(g, rng)
    for k, v in sorted(results.items()):
        print(k, {c: tuple(round(float(t), 1) for t in vals) for c, vals in v.items()})


if __name__ == "__main__":
    main(sys.argv[1])
