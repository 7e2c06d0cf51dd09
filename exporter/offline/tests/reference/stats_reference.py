#!/usr/bin/env python3
"""Reference values for clockpath's statistics module, computed independently with numpy and
scipy.stats.bootstrap(method='percentile').

Writes stats_reference.json next to this script: the data sets themselves (so the Rust test
reads exactly these numbers), their median and sample standard deviation, ±3σ outlier
rejection, and bootstrap percentile CIs (median; difference of medians; variance ratio).

The CI endpoints a B = 500 bootstrap gives depend on its random resamples, so clockpath's
cannot match scipy's exactly. For each endpoint this script records
  - `expected`: the endpoint with B = 20 000 resamples (the B → ∞ value, to ~1/6 of the
    B = 500 noise), and
  - `tolerance`: 4 × the standard deviation of that endpoint over 200 independent B = 500
    bootstraps (scipy, different seeds).
A correct B = 500 implementation lands within the tolerance with probability > 99.99 % per
endpoint; a wrong statistic, level or quantile rule lands far outside it.

Run: python3 exporter/tests/reference/stats_reference.py   (needs numpy, scipy)
"""
import json
import os

import numpy as np
from scipy import stats

LEVEL = 0.95
B_SMALL, B_TRUTH, REPEATS = 500, 20_000, 200


def ci(data, statistic, n_resamples, seed):
    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=LEVEL,
                          method="percentile", vectorized=False, random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def endpoints(data, statistic):
    truth = ci(data, statistic, B_TRUTH, 12345)
    small = np.array([ci(data, statistic, B_SMALL, 1000 + r) for r in range(REPEATS)])
    sd = small.std(axis=0, ddof=1)
    return {
        "lower": {"expected": truth[0], "tolerance": float(4 * sd[0])},
        "upper": {"expected": truth[1], "tolerance": float(4 * sd[1])},
    }


def median_stat(x):
    return np.median(x)


def diff_stat(a, b):
    return np.median(a) - np.median(b)


def ratio_stat(a, b):
    return np.var(a, ddof=1) / np.var(b, ddof=1)


def main():
    rng = np.random.default_rng(20261126)
    sets = {
        "normal_300": rng.normal(1000.0, 50.0, 300),
        "lognormal_1000": rng.lognormal(10.0, 0.5, 1000),
        "outliers_305": np.concatenate([rng.normal(1e6, 1e4, 300), np.full(5, 1.5e6)]),
        "offset_1111ms_300": 1.111e9 + rng.normal(0.0, 2e4, 300),
        "bimodal_500": np.concatenate([rng.normal(100.0, 5.0, 250), rng.normal(200.0, 5.0, 250)]),
        "small_40": rng.exponential(1000.0, 40),
    }
    out = {"level": LEVEL, "resamples": B_SMALL, "single": {}, "pairs": {}}
    for name, x in sets.items():
        x = [float(v) for v in x]
        arr = np.array(x)
        m, sd = float(np.median(arr)), float(np.std(arr, ddof=1))
        keep = np.abs(arr - m) <= 3 * sd
        out["single"][name] = {
            "data": x,
            "median": m,
            "std_dev": sd,
            "rejected_3sigma": int((~keep).sum()),
            "median_ci": endpoints((arr,), median_stat),
        }
        print(name, "done")
    host = rng.normal(1000.0, 50.0, 300)
    vm = rng.normal(1010.0, 110.0, 300)
    pairs = {"vm_vs_host": (vm, host)}
    for name, (a, b) in pairs.items():
        out["pairs"][name] = {
            "a": [float(v) for v in a],
            "b": [float(v) for v in b],
            "median_difference": float(np.median(a) - np.median(b)),
            "variance_ratio": float(np.var(a, ddof=1) / np.var(b, ddof=1)),
            "median_difference_ci": endpoints((a, b), diff_stat),
            "variance_ratio_ci": endpoints((a, b), ratio_stat),
        }
        print(name, "done")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stats_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
