#!/usr/bin/env python3
"""When operations' last progress events and their ends were committed.

Starts N demo operations at once on a running server, waits for them, reads
each one's events back over the API, and prints, in ms after the first
`operation.created`, when the operations completed and when each one's last
progress event was committed (docs/performance.md, "Terminal latency at
moderate load"). Loopback only; it starts N operations and nothing else.

    D=$(mktemp -d)
    target/release/opal serve --listen 127.0.0.1:18792 --data "$D" \\
        --progress-window-ms 500 --max-concurrent 50 &
    tests/benches/window-edges.py 127.0.0.1:18792 [N [STEPS [STEP_MS]]]
"""

import concurrent.futures
import datetime
import json
import sys
import time
import urllib.request


def call(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.load(reply)


def ms(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def spread(label, values):
    values = sorted(values)
    print(f"{label}: min {values[0]:.0f} p50 {values[len(values) // 2]:.0f} max {values[-1]:.0f} ms")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    base = f"http://{sys.argv[1]}/api/v1/operations"
    n, steps, step_ms = (int(a) for a in (sys.argv[2:] + ["50", "20", "50"][len(sys.argv) - 2:])[:3])
    params = {"steps": steps, "step_ms": step_ms}
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        ids = list(pool.map(lambda i: call(base, {"type": "demo", "target": f"edge-{i}", "params": params})["id"],
                            range(n)))
    time.sleep(steps * step_ms / 1000 + 1.5)
    created, completed, last_progress = [], [], []
    for id in ids:
        events = call(f"{base}/{id}/events")["events"]
        at = {kind: [ms(e["at"]) for e in events if e["event"] == f"operation.{kind}"]
              for kind in ("created", "completed", "progress")}
        if not at["completed"]:
            sys.exit(f"{id} has not completed; give it longer")
        created.append(at["created"][0])
        completed.append(at["completed"][0])
        last_progress.append(at["progress"][-1])
    start = min(created)
    spread("completed", [c - start for c in completed])
    spread("last progress", [p - start for p in last_progress])


if __name__ == "__main__":
    main()
