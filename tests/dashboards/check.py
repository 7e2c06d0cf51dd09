#!/usr/bin/env python3
"""Schema check of clockpath's Grafana dashboards, with Grafana's Foundation SDK.

Usage: check.py [DASHBOARD_DIR]    (default: the workspace's dashboards/)

For each dashboard:
  1. dashboards/generate.py regenerates it byte for byte (the files are generated with the SDK's
     builders; a hand edit, or a generator change not written back, fails);
  2. the file parses into the SDK's Dashboard model and serialises back without dropping or
     changing any key (the SDK may add defaults; additions are fine);
  3. sanity: panel ids unique, panel titles unique and without variables, every panel and
     query on the ${datasource} variable, every template variable reference one of the
     dashboard's variables or Grafana's interval ones.
Failures go to stderr, naming the dashboard and the JSON path, and the exit code is 1.

On success, stdout is a JSON list of every query, for the fleet test to run against Prometheus:
  [{"dashboard": "clockpath.json", "panel": "<title>", "ref": "A", "expr": "...", "kind": "panel"},
   {"dashboard": "clockpath.json", "panel": "<variable name>", "ref": "", "expr": "label_values(...)",
    "kind": "variable"}, ...]
"""

import json
import re
import sys
from pathlib import Path

from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

WORKSPACE = Path(__file__).resolve().parents[2]
# Variables the queries may reference: the dashboards' own and Grafana's built-in intervals.
BUILTIN = {"__rate_interval", "__interval"}
VAR_REF = re.compile(r"\$(?:\{([A-Za-z0-9_]+)(?::[a-z]+)?\}|([A-Za-z0-9_]+))")


def compare(src, out, path: str, problems: list[str]) -> None:
    """Every key and value of `src` must be in `out`, unchanged (recursively)."""
    if isinstance(src, dict):
        if not isinstance(out, dict):
            problems.append(f"{path or '/'}: object became {type(out).__name__}")
            return
        for k, v in src.items():
            if k not in out:
                problems.append(f"{path}/{k}: dropped by the SDK's model")
            else:
                compare(v, out[k], f"{path}/{k}", problems)
    elif isinstance(src, list):
        if not isinstance(out, list) or len(out) != len(src):
            problems.append(f"{path}: list changed ({json.dumps(src)[:80]} -> {json.dumps(out)[:80]})")
            return
        for i, (a, b) in enumerate(zip(src, out)):
            compare(a, b, f"{path}/{i}", problems)
    elif type(src) is not type(out) or src != out:
        problems.append(f"{path}: changed {json.dumps(src)} -> {json.dumps(out)}")


def round_trip(data: dict) -> dict:
    return json.loads(json.dumps(Dashboard.from_json(data), cls=JSONEncoder))


def all_panels(d: dict):
    """Top-level panels and the panels of collapsed rows, with their JSON paths."""
    for i, p in enumerate(d.get("panels", [])):
        yield f"/panels/{i}", p
        for j, c in enumerate(p.get("panels", [])):
            yield f"/panels/{i}/panels/{j}", c


def sanity(d: dict, problems: list[str]) -> None:
    names = {v["name"] for v in d["templating"]["list"]}
    allowed = names | BUILTIN
    ids: dict[int, str] = {}
    titles: dict[str, str] = {}

    def refs(text: str, path: str) -> None:
        for m in VAR_REF.finditer(text):
            name = m.group(1) or m.group(2)
            if name not in allowed:
                problems.append(f"{path}: references ${name}, not a variable of this dashboard")

    for path, p in all_panels(d):
        pid = p.get("id")
        if pid is None:
            problems.append(f"{path}: panel has no id")
        elif pid in ids:
            problems.append(f"{path}: id {pid} also used by {ids[pid]}")
        else:
            ids[pid] = path
        if p.get("type") == "row":
            continue
        # The fleet test names a query by dashboard, panel title and refId: titles are unique
        # and literal.
        title = p.get("title", "")
        if title in titles:
            problems.append(f"{path}/title: {title!r} also titles {titles[title]}")
        titles[title] = path
        if "$" in title:
            problems.append(f"{path}/title: {title!r} holds a variable")
        if p.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
            problems.append(f"{path}/datasource: {json.dumps(p.get('datasource'))}, not the ${{datasource}} variable")
        targets = p.get("targets") or []
        if not targets:
            problems.append(f"{path}: panel {p.get('title')!r} has no query")
        for k, t in enumerate(targets):
            tp = f"{path}/targets/{k}"
            if t.get("datasource", {}).get("uid", "${datasource}") != "${datasource}":
                problems.append(f"{tp}/datasource: not the ${{datasource}} variable")
            if not t.get("expr"):
                problems.append(f"{tp}: no expr")
            refs(t.get("expr", ""), f"{tp}/expr")
            refs(t.get("legendFormat", ""), f"{tp}/legendFormat")
    for i, v in enumerate(d["templating"]["list"]):
        if v.get("type") == "query":
            if v.get("datasource") != {"type": "prometheus", "uid": "${datasource}"}:
                problems.append(f"/templating/list/{i}/datasource: not the ${{datasource}} variable")
            refs(str(v.get("query", "")), f"/templating/list/{i}/query")


def queries(name: str, d: dict) -> list[dict]:
    out = []
    for v in d["templating"]["list"]:
        if v.get("type") == "query":
            q = v.get("query")
            expr = q.get("query", "") if isinstance(q, dict) else (q or v.get("definition", ""))
            out.append({"dashboard": name, "panel": v["name"], "ref": "", "expr": expr, "kind": "variable"})
    for _, p in all_panels(d):
        for t in p.get("targets") or []:
            if t.get("expr"):
                out.append(
                    {"dashboard": name, "panel": p["title"], "ref": t.get("refId", ""), "expr": t["expr"], "kind": "panel"}
                )
    return out


def main() -> int:
    directory = Path(sys.argv[1]) if len(sys.argv) > 1 else WORKSPACE / "dashboards"
    sys.path.insert(0, str(directory))
    sys.dont_write_bytecode = True  # no __pycache__ in dashboards/
    import generate  # noqa: E402  (dashboards/generate.py)

    plugins.register_default_plugins()
    failures: list[str] = []
    expected = generate.render()
    files = sorted(p.name for p in directory.glob("*.json"))
    for name in sorted(set(expected) - set(files)):
        failures.append(f"{name}: generate.py makes it but it is not in {directory}")
    listed = []
    for name in files:
        text = (directory / name).read_text(encoding="utf-8")
        if name not in expected:
            failures.append(f"{name}: not made by generate.py (add it there)")
        elif text != expected[name]:
            failures.append(f"{name}: differs from what dashboards/generate.py writes (run it)")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            failures.append(f"{name}: not JSON: {e}")
            continue
        problems: list[str] = []
        try:
            compare(data, round_trip(data), "", problems)
        except Exception as e:  # the SDK's own parse errors: the schema refuses the file
            problems.append(f"/: the SDK cannot parse it: {type(e).__name__}: {e}")
        sanity(data, problems)
        failures.extend(f"{name}: {p}" for p in problems)
        listed.extend(queries(name, data))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        return 1
    print(json.dumps(listed, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
