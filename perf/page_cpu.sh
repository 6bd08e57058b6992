#!/usr/bin/env bash
# GET / with 100 notes shown (150 stored): server CPU per request and req/s.
# The server runs on CPU 0 (one core, fsync never: the page does not write),
# wrk on CPU 1; server CPU comes from /proc/PID/stat, so it holds even when
# other load on the machine makes req/s noisy. Interleave builds to compare.
# Usage: perf/page_cpu.sh BIN PORT LABEL   (needs wrk, curl, python3, taskset)
set -euo pipefail
BIN=$1; PORT=$2; LABEL=$3
D=$(mktemp -d)
taskset -c 0 $BIN serve --listen 127.0.0.1:$PORT --data-dir $D/data --cores 1 --fsync never > $D/out 2> $D/err &
PID=$!
for i in $(seq 1 50); do grep -q listening $D/out 2>/dev/null && break; sleep 0.1; done
for i in $(seq 1 150); do curl -s -o /dev/null -XPOST -H 'Content-Type: text/plain' --data-binary "benchmark note number $i with some ordinary text in it" http://127.0.0.1:$PORT/notes; done
BYTES=$(curl -s http://127.0.0.1:$PORT/ | wc -c)
t0=$(awk '{print $14+$15}' /proc/$PID/stat)
OUT=$(taskset -c 1 wrk -t1 -c32 -d8s http://127.0.0.1:$PORT/ 2>&1)
t1=$(awk '{print $14+$15}' /proc/$PID/stat)
REQS=$(echo "$OUT" | awk '/requests in/{print $1}')
RPS=$(echo "$OUT" | awk '/Requests\/sec/{print $2}')
LAT=$(echo "$OUT" | awk '/Latency/{print $2}')
TICKS=$(getconf CLK_TCK)
CPU_US=$(python3 -c "print(round(($t1-$t0)/$TICKS*1e6/$REQS,1))")
echo "$LABEL body_bytes=$BYTES req/s=$RPS latency_avg=$LAT server_cpu_us_per_req=$CPU_US"
kill -TERM $PID; wait $PID 2>/dev/null || true
rm -rf $D
