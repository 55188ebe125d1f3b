#!/usr/bin/env bash
# The heap of `opal serve` with N demo operations running at once, by site:
#   deploy/build-release && N=1000 tests/benches/heap-running.sh
# then heaptrack_print -f $OUT/heaptrack.opal.zst --print-peaks 1 --sub-peak-limit 14
# (docs/performance.md, "The heap per running operation, by site"). Loopback only; stops by itself.
set -u
N=${N:-1000}
BIN=${BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/dist/opal}
D=$(mktemp -d)
cat > $D/opal.toml <<CFG
max_concurrent = $N
max_instances = $((N + 64))
CFG
OUT=${OUT:-$(mktemp -d)}; cd "$OUT"

heaptrack -o $OUT/heaptrack.opal $BIN serve --listen 127.0.0.1:18090 --data $D/data --config $D/opal.toml >$OUT/out 2>$OUT/err &
HP=$!
for i in $(seq 1 60); do grep -q "listening on" $OUT/out && break; sleep 1; done
seq 1 $N | xargs -P 16 -I{} curl -s -o /dev/null -H 'content-type: application/json' \
  -d '{"type":"demo","target":"t-{}","params":{"steps":6,"step_ms":10000}}' http://127.0.0.1:18090/api/v1/operations
sleep 8
PID=$(pgrep -f "^$BIN serve" | head -1)
curl -s http://127.0.0.1:18090/api/v1/status; echo
grep -E "^(Rss|Pss)" /proc/$PID/smaps_rollup
kill -TERM $PID; sleep 1; kill -TERM $PID
wait $HP
echo "heaptrack data: $OUT/heaptrack.opal.zst"
