#!/bin/bash
# hook_latency.sh: wall time of one `jobscope hook` call, as Slurm pays it (process start included),
# against a live `serve`, a server that is down (connection refused), and a server that accepts the
# connection but never answers (the timeout bounds it). Results: BENCHMARKS.md.
#
#   bench/hook_latency.sh [BINARY]     default: $CARGO_TARGET_DIR/release/jobscope
# Environment: N (calls per case, default 300), N_HUNG (default 5), TIMEOUT (hook timeout, default 2s).
set -euo pipefail
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/jobscope}
N=${N:-300}
N_HUNG=${N_HUNG:-5}
TIMEOUT=${TIMEOUT:-2s}
[ -x "$BIN" ] || {
	echo "no binary at $BIN (cargo build --release --bin jobscope)" >&2
	exit 1
}
WORK=$(mktemp -d)
SERVE_PID=
HUNG_PID=
cleanup() {
	[ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null
	[ -n "$HUNG_PID" ] && kill "$HUNG_PID" 2>/dev/null
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One call of `hook KIND` for job $2 with a node Prolog/Epilog environment; prints milliseconds.
call() { # kind job server
	local t0 t1
	t0=$EPOCHREALTIME
	env -i SLURM_SCRIPT_CONTEXT="$1_slurmd" SLURM_JOB_ID="$2" SLURM_JOB_USER=bench SLURM_JOB_UID=1000 \
		SLURM_JOB_PARTITION=batch SLURM_NODELIST='node[001-004]' SLURM_JOB_CPUS_PER_NODE='32(x4)' \
		SLURM_JOB_GPUS=0,1 SLURM_CLUSTER_NAME=bench SLURM_JOB_EXIT_CODE2=0:0 \
		JOBSCOPE_HOOK_CONFIG=/nonexistent "$BIN" hook "$1" --server "$3" --timeout "$TIMEOUT" \
		--spool-dir "$WORK/spool-$4" 2>/dev/null </dev/null
	t1=$EPOCHREALTIME
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", (b - a) * 1000 }'
}

stats() { # label file
	sort -n "$2" | awk -v label="$1" '{ v[NR] = $1 } END {
		p50 = v[int(NR * 0.50 + 0.5)]; p99 = v[int(NR * 0.99 + 0.5)]; if (p99 == "") p99 = v[NR]
		printf "| %s | %d | %.1f | %.1f | %.1f |\n", label, NR, p50, p99, v[NR] }'
}

PORT=$(free_port)
"$BIN" serve --port "$PORT" --database-url "sqlite://$WORK/db" >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/v1/health" && break; sleep 0.1; done

echo "| case | calls | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
: >"$WORK/live"
for i in $(seq "$N"); do
	call prolog $((100000 + i)) "http://127.0.0.1:$PORT" live >>"$WORK/live"
	call epilog $((100000 + i)) "http://127.0.0.1:$PORT" live >>"$WORK/live"
done
stats "live server (prolog+epilog)" "$WORK/live"
kill "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=

# Down: nothing listens on the port (connection refused); every event is spooled.
: >"$WORK/down"
for i in $(seq "$N"); do
	call prolog $((200000 + i)) "http://127.0.0.1:$PORT" down >>"$WORK/down"
done
stats "server down (refused), spooling" "$WORK/down"

# Hung: a listener that never accepts or answers; the timeout is the bound.
HUNG=$(free_port)
python3 -c "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$HUNG)); s.listen(1000); time.sleep(3600)" &
HUNG_PID=$!
sleep 0.3
: >"$WORK/hung"
for i in $(seq "$N_HUNG"); do
	call prolog $((300000 + i)) "http://127.0.0.1:$HUNG" hung >>"$WORK/hung"
done
stats "server hung (timeout $TIMEOUT), spooling" "$WORK/hung"
echo
echo "spooled: down=$(find "$WORK/spool-down" -name '*.rec' | wc -l) hung=$(find "$WORK/spool-hung" -name '*.rec' | wc -l)"
