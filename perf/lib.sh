# Shared helpers for perf/run and perf/bench-vs-wrk (sourced, not run).
#
# Placement on a 2-core machine: every server under test runs on CPU
# $SERVER_CPU (one executor / worker / thread) and the load generator on
# CPU $CLIENT_CPU, both with taskset, so the two never compete for a core
# and the server's CPU per request (from /proc) is its own. On a machine
# with one CPU nothing is pinned (and the numbers say so).

set -euo pipefail

PERF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$PERF_DIR/.." && pwd)
OUT_DIR=${PERF_OUT:-$PERF_DIR/out}
BIN=$REPO_DIR/target/release/uringnotes
# The same code built against glommio with IORING_SETUP_COOP_TASKRUN.
BIN_TUNED=$REPO_DIR/target/tuned/release/uringnotes
PEER_DIR=$PERF_DIR/peers/hyper-notes
PEER_BIN=$OUT_DIR/target-peers/release/hyper-notes
MAY_DIR=$PERF_DIR/peers/may-static
MAY_BIN=$OUT_DIR/target-peers/release/may-static
CLK_TCK=$(getconf CLK_TCK)

# Command prefixes (arrays, not functions: a background job started through
# a function would be a subshell, and $! its PID instead of the server's).
if (($(nproc) >= 2)); then
    SERVER_CPU=${SERVER_CPU:-0}
    CLIENT_CPU=${CLIENT_CPU:-1}
    ON_SERVER_CPU=(taskset -c "$SERVER_CPU")
    ON_CLIENT_CPU=(taskset -c "$CLIENT_CPU")
else
    echo "perf: only one CPU: server and load generator share it (numbers are not comparable to pinned runs)" >&2
    ON_SERVER_CPU=()
    ON_CLIENT_CPU=()
fi

log() { echo "perf: $*" >&2; }

# Installs missing tools with apt-get (as root).
need_packages() {
    local missing=()
    local tool pkg
    for spec in "$@"; do
        tool=${spec%%:*}
        pkg=${spec##*:}
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        log "please install: ${missing[*]}"
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

build_uringnotes() {
    log "building uringnotes (release, stock glommio)"
    (cd "$REPO_DIR" && cargo build --release --locked --quiet)
    log "building uringnotes (release, glommio with COOP_TASKRUN: tools/build-tuned)"
    (cd "$REPO_DIR" && tools/build-tuned build --release --quiet)
}

build_peer() {
    log "building the peers (perf/peers/hyper-notes and perf/peers/may-static, release)"
    cargo build --release --locked --quiet --manifest-path "$PEER_DIR/Cargo.toml" \
        --target-dir "$OUT_DIR/target-peers"
    cargo build --release --locked --quiet --manifest-path "$MAY_DIR/Cargo.toml" \
        --target-dir "$OUT_DIR/target-peers"
}

# Servers started by this script, for stop_all: "name pid" lines.
declare -a STARTED_PIDS=()

# wait_for_line FILE PATTERN: waits (max 30 s) until FILE has a line matching PATTERN.
# wait_for_line FILE PATTERN [PID]: waits up to 30 s for PATTERN in FILE,
# polling every 10 ms (scripts time a server's start with it). With PID (a
# child of this shell), it stops as soon as that process has exited and says
# with what status, instead of waiting out the 30 s.
wait_for_line() {
    local file=$1 pattern=$2 pid=${3:-} tries code
    for ((tries = 0; tries < 3000; tries++)); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            grep -q "$pattern" "$file" 2>/dev/null && return 0
            code=0
            wait "$pid" 2>/dev/null || code=$?
            log "process $pid exited with status $code before '$pattern' appeared in $file"
            cat "$file" >&2 || true
            return 1
        fi
        sleep 0.01
    done
    log "timed out waiting for '$pattern' in $file"
    cat "$file" >&2 || true
    return 1
}

# start_uringnotes NAME PORT EXTRA_ARGS...: one executor on the server CPU.
start_uringnotes() {
    local name=$1 port=$2
    shift 2
    rm -rf "$OUT_DIR/data-$name"
    "${ON_SERVER_CPU[@]}" "${SERVER_BIN:-$BIN}" serve --listen "127.0.0.1:$port" --cores 1 \
        --data-dir "$OUT_DIR/data-$name" "$@" >"$OUT_DIR/$name.out" 2>"$OUT_DIR/$name.err" &
    STARTED_PIDS+=("$!")
    wait_for_line "$OUT_DIR/$name.out" "listening on"
}

# start_peer PORT: hyper-notes with one tokio worker thread on the server CPU.
start_peer() {
    local port=$1
    rm -f "$OUT_DIR/peer-notes.log"
    "${ON_SERVER_CPU[@]}" env TOKIO_WORKER_THREADS=1 "$PEER_BIN" "127.0.0.1:$port" "$OUT_DIR/peer-notes.log" \
        >"$OUT_DIR/peer.out" 2>"$OUT_DIR/peer.err" &
    STARTED_PIDS+=("$!")
    wait_for_line "$OUT_DIR/peer.out" "listening on"
}

# start_may PORT: may-static (may_minihttp) with one worker thread on the
# server CPU, serving $OUT_DIR/www like nginx.
start_may() {
    local port=$1
    "${ON_SERVER_CPU[@]}" env MAY_WORKERS=1 "$MAY_BIN" "127.0.0.1:$port" "$OUT_DIR/www" \
        >"$OUT_DIR/may.out" 2>"$OUT_DIR/may.err" &
    STARTED_PIDS+=("$!")
    wait_for_line "$OUT_DIR/may.out" "listening on"
}

# start_nginx PORT: one worker, static files from $OUT_DIR/www, loopback only.
# keepalive_requests is raised: the default (1000) makes nginx close
# connections under load and the benchmark would measure reconnects.
start_nginx() {
    local port=$1 conf=$OUT_DIR/nginx
    mkdir -p "$conf/tmp"
    local user_line=""
    [[ $(id -u) -eq 0 ]] && user_line="user root;"
    cat >"$conf/nginx.conf" <<EOF
$user_line
worker_processes 1;
daemon off;
pid $conf/nginx.pid;
error_log $conf/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $conf/tmp/body;
    proxy_temp_path $conf/tmp/proxy;
    fastcgi_temp_path $conf/tmp/fastcgi;
    uwsgi_temp_path $conf/tmp/uwsgi;
    scgi_temp_path $conf/tmp/scgi;
    server {
        listen 127.0.0.1:$port reuseport;
        root $OUT_DIR/www;
        location = / { default_type "text/html; charset=utf-8"; try_files /index.html =404; }
        location /notes/ { default_type application/json; }
        location = /healthz { return 200 "ok"; }
    }
}
EOF
    "${ON_SERVER_CPU[@]}" /usr/sbin/nginx -c "$conf/nginx.conf" -e "$conf/error.log" >"$OUT_DIR/nginx.out" 2>&1 &
    STARTED_PIDS+=("$!")
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && return 0
        sleep 0.1
    done
    log "nginx did not start"
    cat "$conf/error.log" "$OUT_DIR/nginx.out" >&2 || true
    return 1
}

stop_all() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
}

# descendants PID: PID and every process below it.
descendants() {
    local p
    echo "$1"
    for p in $(pgrep -P "$1" || true); do
        descendants "$p"
    done
}

# cpu_ticks PID: utime + stime of the process and all its descendants
# (nginx's worker), in clock ticks.
cpu_ticks() {
    local pid=$1 total=0 p
    for p in $(descendants "$pid"); do
        # Fields after the command name (which may contain spaces): utime is
        # the 12th, stime the 13th after the closing parenthesis.
        local rest
        rest=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $rest
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

# wrk_cell ROUND CONNS NAME PID URL OUT_TXT: warms up for $WARMUP (default 1 s), then runs
# wrk -t1 for $DURATION on the client CPU; prints "round conns name req/s
# server-CPU-us-per-request" (tab-separated) from wrk's report and the
# server's CPU ticks over the run.
wrk_cell() {
    local round=$1 conns=$2 name=$3 pid=$4 url=$5 out=$6 before after
    "${ON_CLIENT_CPU[@]}" wrk -t1 -c"$conns" -d"${WARMUP:-1s}" "$url" >/dev/null
    before=$(cpu_ticks "$pid")
    "${ON_CLIENT_CPU[@]}" wrk -t1 -c"$conns" -d"$DURATION" "$url" >"$out"
    after=$(cpu_ticks "$pid")
    awk -v r="$round" -v c="$conns" -v s="$name" -v t="$((after - before))" -v hz="$CLK_TCK" '
        /requests in/ {n = $1}
        /Requests\/sec/ {rps = $2}
        END {printf "%s\t%s\t%s\t%s\t%.2f\n", r, c, s, rps, (n > 0 ? t / hz * 1e6 / n : 0)}' "$out"
}

# post_note PORT TEXT: prints the Location of the created note.
post_note() {
    curl -fs -o /dev/null -D - --data-urlencode "text=$2" "http://127.0.0.1:$1/notes" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p'
}

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

load_average() { cut -d' ' -f1-3 /proc/loadavg; }
