#!/usr/bin/env python3
"""Lint and render the clockpath chart with Helm's own Go SDK (helm-python-sdk), offline.

Usage: render.py CHART_DIR VALUES_JSON
Prints one JSON object: {"lint": [...messages...], "objects": [...rendered manifests...]}
or {"error": "..."} when the values are refused or a template fails.
"""
import json
import sys

import helm_python as helm
import yaml


def main() -> int:
    chart_dir, values = sys.argv[1], json.loads(sys.argv[2])
    report = helm.lint(chart_dir, values, strict=True)
    lint = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + [
        {"severity": 3, "error": e} for e in report.get("errors", [])
    ]
    try:
        with helm.Chart.load(chart_dir) as chart:
            chart.validate_schema(values)
            manifests = chart.render(values, name="cp", namespace="monitoring", is_install=True)
    except helm.HelmError as e:
        print(json.dumps({"lint": lint, "error": str(e)}))
        return 0
    objects = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc:
                doc["__template"] = path
                objects.append(doc)
    print(json.dumps({"lint": lint, "objects": objects, "notes": manifests.get("clockpath/templates/NOTES.txt", "")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
