#!/usr/bin/env bash
# RSS of `opal serve` by kind of mapping, idle and then with N demo operations
# running at once (docs/performance.md, "Smaller plugins"):
#   cargo build --release && N=2000 tests/benches/rss-running.sh
# Loopback only; kills the server and removes its data when done.
set -u
N=${N:-2000}
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/release/opal}
PORT=${PORT:-18091}
D=$(mktemp -d)
cat > "$D/opal.toml" <<CFG
max_concurrent = $N
max_instances = $((N + 64))
CFG

# Sums Rss by kind of mapping: the wasm memory images, the malloc heap, and
# anonymous mappings by size (the pooling allocator's stacks are 2 MiB each,
# a linear memory's stack region 1 MiB).
by_mapping() {
  python3 - "$1" <<'PY'
import re, sys, collections
rss = collections.Counter(); count = collections.Counter(); key = None
for line in open(f"/proc/{sys.argv[1]}/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$", line)
    if m:
        size, perm, name = int(m.group(2), 16) - int(m.group(1), 16), m.group(3), m.group(4).strip()
        if "wasm-memory-image" in name: key = "wasm memory images"
        elif name == "[heap]": key = "[heap] (malloc)"
        elif name.startswith("/"): key = "files (the binary, libraries)"
        elif name: key = name
        else: key = f"anonymous {perm} of {size >> 10} KiB" if size < (64 << 20) else f"anonymous {perm}, large"
        count[key] += 1
    elif line.startswith("Rss:"):
        rss[key] += int(line.split()[1])
for key, kib in rss.most_common(12):
    print(f"{kib / 1024:9.1f} MiB in {count[key]:6d} mappings: {key}")
print(f"{sum(rss.values()) / 1024:9.1f} MiB in all")
PY
}

"$BIN" serve --listen 127.0.0.1:$PORT --data "$D/data" --config "$D/opal.toml" >"$D/out" 2>"$D/err" &
PID=$!
for _ in $(seq 1 60); do grep -q "listening on" "$D/out" && break; sleep 1; done
sleep 1
echo "== idle"; by_mapping $PID
seq 1 "$N" | xargs -P 16 -I{} curl -s -o /dev/null -H 'content-type: application/json' \
  -d '{"type":"demo","target":"t-{}","params":{"steps":6,"step_ms":10000}}' "http://127.0.0.1:$PORT/api/v1/operations"
sleep 4
curl -s "http://127.0.0.1:$PORT/api/v1/status"; echo
echo "== $N running"; by_mapping $PID
grep -E "^(Rss|Pss)" /proc/$PID/smaps_rollup
# glibc's own account of the heap (in use against held), where gdb is installed.
if command -v gdb >/dev/null; then
  gdb -p $PID -batch -ex "call (void)malloc_stats()" >/dev/null 2>&1
  sleep 0.5
  grep -A2 -E "^(Arena|Total)" "$D/err"
fi
kill -9 $PID; wait $PID 2>/dev/null; rm -rf "$D"
