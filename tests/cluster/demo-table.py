"""The demo's table of tasks: reads `kubectl get agenttasks -o json` on stdin."""
import json
import sys

tasks = json.load(sys.stdin)["items"]
print(f"{'TASK':<14} {'TYPE':<16} {'PHASE':<10} {'AGENT':<13} RESULT OR MESSAGE")
for t in sorted(tasks, key=lambda t: t["metadata"]["name"]):
    s = t.get("status", {})
    r = s.get("result")
    if isinstance(r, dict) and "stdout" in r:
        shown = "stdout: " + r["stdout"].strip().replace("\n", " | ")
    elif r is not None:
        shown = json.dumps(r)
    else:
        shown = s.get("message", "")
    name, kind = t["metadata"]["name"], t["spec"]["type"]
    print(f"{name:<14} {kind:<16} {s.get('phase', ''):<10} {s.get('agent') or '':<13} {shown[:100]}")
