"""The demo's table of tasks: reads `kubectl get agenttasks -o json` on stdin."""
import json
import sys

tasks = sorted(json.load(sys.stdin)["items"], key=lambda t: t["metadata"]["name"])
width = max([len(t["metadata"]["name"]) for t in tasks] + [14])
print(f"{'TASK':<{width}} {'TYPE':<18} {'PHASE':<10} {'AGENT':<13} RESULT OR MESSAGE")
for t in tasks:
    s = t.get("status", {})
    r = s.get("result")
    if isinstance(r, dict) and "stdout" in r:
        shown = "stdout: " + r["stdout"].strip().replace("\n", " | ")
    elif isinstance(r, dict) and isinstance(r.get("steps"), dict):
        steps = r["steps"]
        done = sum(1 for v in steps.values() if v.get("phase") == "Succeeded")
        shown = f"{done}/{len(steps)} steps succeeded: " + ", ".join(steps)
    elif isinstance(r, dict) and isinstance(r.get("hits"), list) and r["hits"]:
        h = r["hits"][0]
        shown = f"best hit: {h['path']}:{h['startLine']} {h.get('symbol', '')}"
    elif isinstance(r, dict) and "modularity" in r:
        sizes = ", ".join(str(c["size"]) for c in r["communities"])
        shown = f"{len(r['communities'])} communities ({sizes} nodes), modularity {r['modularity']:.2f}"
    elif isinstance(r, dict) and isinstance(r.get("results"), list) and "finalUrl" in r:
        read = [v for v in r["results"] if isinstance(v, str)]
        shots = [f"{v['width']}x{v['height']}" for v in r["results"] if isinstance(v, dict) and "png" in v]
        shown = f"page {r['title']!r}: read {', '.join(read)}; screenshots {', '.join(shots)}"
    elif isinstance(r, dict) and "languages" in r:
        shown = f"{r['files']} files, {r['symbols']} definitions, {r['chunks']} chunks ({r['store']} store)"
    elif r is not None:
        shown = json.dumps(r)
    else:
        shown = s.get("message", "")
    name, kind = t["metadata"]["name"], t["spec"]["type"]
    print(f"{name:<{width}} {kind:<18} {s.get('phase', ''):<10} {s.get('agent') or '':<13} {shown[:100]}")
