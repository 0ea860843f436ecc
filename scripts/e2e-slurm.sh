#!/bin/bash
# e2e-slurm.sh: jobscope end to end on a real Slurm (Debian's packages, via scripts/dev-slurm.sh).
#
# Starts a throw-away single-node Slurm (jobs in cgroups, see E2E_SLURM_CGROUP) whose Prolog, Epilog,
# PrologSlurmctld and EpilogSlurmctld are `jobscope hook`, and `jobscope serve --scheduler slurm`
# (SQLite, tokens, slurmrestd with JWT, reconcile every 2 s), then submits real jobs and checks what the API says about each: state, exit code, signal,
# user, partition, GPU devices, audit trail (prolog, epilog, reconciler). Cancelled and timed-out jobs
# must end with Slurm's state, and a job whose epilog never reaches the server must be finalized by the
# reconciler. Partitions come from slurmrestd (a drain is a partition_event on the SSE stream, a
# running job counts in its partition), and health goes degraded while slurmrestd is stopped and
# healthy once it is back. Then it stops the server while jobs start and finish, brings it back (without the
# reconciler, which would otherwise fill the gap itself) and checks that the spooled events arrive and
# nothing is missing. Users sign in with Slurm's own JWTs: serve verifies them with the cluster's
# auth/jwt key (--slurm-jwt-key-file), `scontrol token username=alice` must give a token jobscope
# accepts, and alice must see her job and not bob's (404, absent from the list). Last, on Slurm
# with job cgroups (JOBSCOPE_SLURM_CGROUP=1), an agent samples a job that burns one CPU
# of two for 10 s and holds 200 MiB of 1 GiB: its efficiency report must say 50 % +- 5 % CPU and
# about 20 % memory. Needs root (slurmd runs jobs as their users) and apt.
#
# A bash script rather than a Rust test: it installs packages, starts daemons as root and drives
# sbatch/scancel/scontrol, which is shell work; `cargo test` stays runnable by anyone without root.
# .ci/run calls it after the test suite.
#
#   scripts/e2e-slurm.sh            build the debug binary if needed, run everything, clean up
# Environment: JOBSCOPE_BIN (binary to test; default $CARGO_TARGET_DIR/debug/jobscope, built if missing),
#   E2E_PORT (serve's port, default 18080), E2E_KEEP=1 (leave the work directory and daemons for a look),
#   E2E_SLURM_CGROUP (default 1: Slurm runs jobs in cgroups, dev-slurm's JOBSCOPE_SLURM_CGROUP=1, for
#   the whole run; 0: the sections before the calibrated report run on proctrack/linuxproc, and Slurm
#   is restarted with cgroups for the report, which needs them either way).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PORT=${E2E_PORT:-18080}
WORK=$(mktemp -d /tmp/jobscope-e2e.XXXXXX)
chmod 0755 "$WORK"
export JOBSCOPE_SLURM_DIR=$WORK/slurm
SPOOL=$WORK/hook-spool
BASE=http://127.0.0.1:$PORT
FAILS=0
SERVE_PID=

say() { printf '%s\n' "$*"; }
die() {
	printf 'e2e-slurm: error: %s\n' "$*" >&2
	exit 1
}
ok() { say "  ok   $*"; }
bad() {
	say "  FAIL $*"
	FAILS=$((FAILS + 1))
}
# check DESCRIPTION ACTUAL EXPECTED
check() {
	if [ "$2" = "$3" ]; then ok "$1 = $3"; else bad "$1: got '$2', want '$3'"; fi
}

cleanup() {
	local rc=$?
	if [ "${E2E_KEEP:-}" = 1 ]; then
		say "E2E_KEEP=1: left $WORK (serve pid ${SERVE_PID:-none}; stop: $REPO/scripts/dev-slurm.sh stop)"
		return
	fi
	stop_serve
	if ((rc != 0 || FAILS != 0)); then
		# Slurm's side too: a job that never started is a scheduling question, not jobscope's.
		local f
		for f in "$JOBSCOPE_SLURM_DIR"/log/slurmctld.log "$JOBSCOPE_SLURM_DIR"/log/slurmd.log; do
			say "--- $(basename "$f") (last 40 lines)"
			tail -n 40 "$f" 2>/dev/null || true
		done
	fi
	"$REPO/scripts/dev-slurm.sh" stop --purge >/dev/null 2>&1 || true
	if ((rc != 0 || FAILS != 0)); then
		say "--- serve log (last 40 lines)"
		tail -n 40 "$WORK/serve.log" 2>/dev/null || true
		if [ -s "$WORK/agent-calibrate.log" ]; then
			say "--- agent log of the calibrated report (last 40 lines)"
			tail -n 40 "$WORK/agent-calibrate.log"
		fi
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || die "must run as root (Slurm runs jobs as their users)"
# One Slurm per machine (fixed ports, one state directory, the node's cgroups): a second run
# on the same machine waits for the first instead of tearing its Slurm down.
exec 9>/tmp/jobscope-slurm.lock
flock 9
for tool in jq curl; do
	command -v "$tool" >/dev/null || {
		apt-get update -qq >/dev/null 2>&1 || true
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jq curl >/dev/null
		break
	}
done

BIN=${JOBSCOPE_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/debug/jobscope}
if [ ! -x "$BIN" ]; then
	say "Building $BIN"
	cargo build --bin jobscope
fi
[ -x "$BIN" ] || die "no jobscope binary at $BIN"

# ---- serve ------------------------------------------------------------------------------------------
HOOK_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
READER_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
AGENT_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
ADMIN_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'hook %s\nreader %s\nagent %s\nadmin %s\n' "$HOOK_TOKEN" "$READER_TOKEN" "$AGENT_TOKEN" "$ADMIN_TOKEN" >"$WORK/tokens"
chmod 0600 "$WORK/tokens"
printf '%s\n' "$AGENT_TOKEN" >"$WORK/agent.token"
printf '%s\n' "$ADMIN_TOKEN" >"$WORK/admin.token"
chmod 0600 "$WORK/agent.token" "$WORK/admin.token"
printf '%s\n' "$HOOK_TOKEN" >"$WORK/hook.token"
chmod 0600 "$WORK/hook.token"

start_serve() { # extra serve flags
	env -u DATABASE_URL -u SCHEDULER_BACKEND RUST_LOG=info,warp=warn "$BIN" --log-format json serve --port "$PORT" \
		--database-url "sqlite://$WORK/jobscope.db" --tokens-file "$WORK/tokens" "$@" \
		>>"$WORK/serve.log" 2>&1 &
	SERVE_PID=$!
	local i
	for ((i = 0; i < 100; i++)); do
		curl -fs -o /dev/null "$BASE/v1/health" && return 0
		kill -0 "$SERVE_PID" 2>/dev/null || die "serve exited (see $WORK/serve.log)"
		sleep 0.1
	done
	die "serve did not answer on $BASE within 10 s"
}

stop_serve() {
	[ -n "$SERVE_PID" ] || return 0
	kill -TERM "$SERVE_PID" 2>/dev/null || true
	wait "$SERVE_PID" 2>/dev/null || true
	SERVE_PID=
}

api() { curl -fsS -H "Authorization: Bearer $READER_TOKEN" "$BASE$1"; }

# ---- Slurm ------------------------------------------------------------------------------------------
say "=== starting Slurm (hooks: $BIN hook prolog|epilog; job cgroups: E2E_SLURM_CGROUP=${E2E_SLURM_CGROUP:-1}) and serve --scheduler slurm"
SLURM_CGROUP=${E2E_SLURM_CGROUP:-1}
dev_slurm_start() { # extra environment for the hook wrappers
	env JOBSCOPE_SLURM_CGROUP="$SLURM_CGROUP" "$@" JOBSCOPE_HOOK_BIN="$BIN" JOBSCOPE_SERVER="$BASE" JOBSCOPE_TOKEN_FILE="$WORK/hook.token" \
		JOBSCOPE_HOOK_SPOOL_DIR="$SPOOL" JOBSCOPE_TIMEOUT=2s \
		"$REPO/scripts/dev-slurm.sh" start >>"$WORK/dev-slurm.log" 2>&1 || {
		cat "$WORK/dev-slurm.log"
		die "dev-slurm start failed"
	}
}
dev_slurm_start
# shellcheck source=/dev/null
. "$JOBSCOPE_SLURM_DIR/env"
TEST_USER=$JOBSCOPE_SLURM_TEST_USER
# The cluster's auth/jwt key (dev-slurm: AuthAltParameters=jwt_key=..., 0600, owned by SlurmUser root).
JWT_KEY_FILE=$JOBSCOPE_SLURM_DIR/etc/jwt.key
SLURM_FLAGS=(--scheduler slurm --slurmrestd-url "$SLURMRESTD_URL" --slurmrestd-user "$SLURMRESTD_USER"
	--slurmrestd-token-file "$SLURMRESTD_TOKEN_FILE" --reconcile-interval 2s --slurm-jwt-key-file "$JWT_KEY_FILE")
start_serve "${SLURM_FLAGS[@]}"

submit() { (cd /tmp && sbatch --parsable "$@") | cut -d';' -f1; }
slurm_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }

wait_state() { # job state timeout_s: until Slurm shows the state
	local t0=$SECONDS
	while ((SECONDS - t0 < $3)); do
		[ "$(slurm_state "$1")" = "$2" ] && return 0
		sleep 0.3
	done
	return 1
}

# Until jobscope has the job in a terminal state (or the timeout passes).
wait_final() { # job timeout_s
	local t0=$SECONDS st
	while ((SECONDS - t0 < $2)); do
		st=$(api "/v1/jobs/$1" 2>/dev/null | jq -r .state) || st=''
		case $st in completed | failed | cancelled) return 0 ;; esac
		sleep 0.3
	done
	return 1
}

field() { api "/v1/jobs/$1" | jq -c "$2"; }

# Until the jq expression is true of the job in jobscope (or the timeout passes).
wait_api() { # job expr timeout_s
	local t0=$SECONDS
	while ((SECONDS - t0 < $3)); do
		[ "$(api "/v1/jobs/$1" 2>/dev/null | jq -r "$2" 2>/dev/null)" = true ] && return 0
		sleep 0.3
	done
	return 1
}

# ---- jobs ---------------------------------------------------------------------------------------------
say "=== submitting jobs"
J_OK=$(submit -J ok --wrap 'sleep 1')
J_FAIL=$(submit -J fail --wrap 'sleep 1; exit 3')
J_GPU=$(submit -J gpu --gres=gpu:1 --wrap 'sleep 1')
J_USER=$(cd /tmp && runuser -u "$TEST_USER" -- env SLURM_CONF="$SLURM_CONF" sbatch --parsable --chdir=/tmp -J other --wrap 'sleep 1' | cut -d';' -f1)
J_ARR=$(submit -J arr --array=1-3 --wrap 'sleep 1')
J_CANCEL=$(submit -J cancel --wrap 'sleep 300')
J_TIME=$(submit -J timeout --time=1 --wrap 'sleep 300')
say "  ok=$J_OK fail=$J_FAIL gpu=$J_GPU user=$J_USER array=$J_ARR cancel=$J_CANCEL timeout=$J_TIME"

# Two CPUs run two jobs at a time, and a job that does not start at once may wait for the
# backfill pass (every 30 s): seen once under load, the cancel job started only on the third
# pass after submission (~86 s), so both waits allow four passes.
wait_state "$J_CANCEL" RUNNING 150 || bad "job $J_CANCEL never ran"
sleep 1
scancel "$J_CANCEL"
wait_state "$J_TIME" RUNNING 150 || bad "job $J_TIME never ran"
scontrol update JobId="$J_TIME" TimeLimit=0

for j in $J_OK $J_FAIL $J_GPU $J_USER $J_CANCEL $J_TIME; do
	wait_final "$j" 120 || bad "job $j not finished in jobscope within 120 s (Slurm: $(slurm_state "$j"))"
done

say "=== checking jobs in the API"
check "ok: state,exit,signal" "$(field "$J_OK" '[.state,.exit_code,.signal]')" '["completed",0,0]'
check "ok: user,partition,name" "$(field "$J_OK" '[.user,.scheduler.partition,.scheduler.extra.job_name]')" '["root","debug","ok"]'
check "ok: nodes,cpus" "$(field "$J_OK" '[.node_count,.allocated_cpus>=1]')" '[1,true]'
check "ok: cluster" "$(field "$J_OK" .cluster_name)" '"jobscope-dev"'
check "ok: runtime > 0.5 s" "$(field "$J_OK" '.runtime_seconds > 0.5')" true
check "fail: state,exit,signal" "$(field "$J_FAIL" '[.state,.exit_code,.signal]')" '["failed",3,0]'
check "gpu: devices,count,vendor" "$(field "$J_GPU" '[.gpu_devices,.gpu_count,.gpu_vendor]')" '[["0"],1,"nvidia"]'
check "other user" "$(field "$J_USER" .user)" "\"$TEST_USER\""
check "other user: state" "$(field "$J_USER" .state)" '"completed"'
# Cancelled and timed-out jobs look like 0:0 to the epilog (slurm-facts); the reconciler sets
# Slurm's state within two intervals.
# Slurm says TIMEOUT once the epilogs are done; jobscope heard the epilog while it ran, and with
# proctrack/cgroup the job stays COMPLETING a little longer.
wait_state "$J_TIME" TIMEOUT 30 || true
check "timeout: Slurm says" "$(slurm_state "$J_TIME")" TIMEOUT
for j in $J_OK $J_CANCEL $J_TIME; do
	wait_api "$j" '.scheduler.raw_state != null' 20 || bad "job $j: no state from Slurm after 20 s"
done
# scancel's SIGTERM reaches the batch shell and its `sleep` in either order: Slurm then records the
# shell killed by signal 15, or the shell exiting 143 (128 + 15) after its child was killed.
got=$(field "$J_CANCEL" '[.state,.exit_code,.signal,.scheduler.raw_state]')
case $got in
'["cancelled",0,15,"CANCELLED"]' | '["cancelled",143,0,"CANCELLED"]') ok "cancel: state,exit,signal,raw = $got" ;;
*) bad "cancel: state,exit,signal,raw: got '$got', want cancelled by signal 15 or exit 143" ;;
esac
check "timeout: state,exit,signal,raw" "$(field "$J_TIME" '[.state,.exit_code,.signal,.scheduler.raw_state]')" '["cancelled",0,15,"TIMEOUT"]'
check "cancel: corrected by" "$(api "/v1/jobs/$J_CANCEL/audit" | jq -r '.events[-1].changed_by')" slurm-reconciler
check "ok: raw state" "$(field "$J_OK" .scheduler.raw_state)" '"COMPLETED"'

# Audit trail: the prologs and epilogs from the hooks, then Slurm's confirmation.
check "ok: audit creators" "$(api "/v1/jobs/$J_OK/audit" | jq -c '[.events[].changed_by] | unique')" '["slurm-epilog","slurm-prolog","slurm-reconciler"]'
check "ok: audit starts with create" "$(api "/v1/jobs/$J_OK/audit" | jq -r '.events[0].change_type')" create
# Two epilogs (the node's and the controller's) make one finish. A prolog that reaches the server
# after the end (its hook timed out and spooled it) may still fill in fields: an update by
# slurm-prolog, not a second finish.
TRAIL=$(api "/v1/jobs/$J_OK/audit")
FINISHES=$(jq '[.events[] | select(.changed_by == "slurm-epilog" and .job_snapshot.state == "completed")] | length' <<<"$TRAIL")
check "ok: one finish in the trail" "$FINISHES" 1
[ "$FINISHES" = 1 ] || say "$(jq -c '.events[] | [.change_type, .changed_by, .job_snapshot.state, .job_snapshot.scheduler.raw_state, .changed_at]' <<<"$TRAIL")"

# Nodes from Slurm: partitions, CPUs and state come from slurmrestd (no agent runs here); a drain
# with its reason shows within two reconcile intervals, and so does the resume.
say "=== checking nodes and health"
check "health" "$(curl -fsS "$BASE/v1/health" | jq -r .status)" healthy
NODE=$(sinfo -h -N -o %N | head -1)
wait_node() { # expr timeout_s: until the jq expression is true of the node in jobscope
	local t0=$SECONDS
	while ((SECONDS - t0 < $2)); do
		[ "$(api "/v1/nodes/$NODE" 2>/dev/null | jq -r "$1" 2>/dev/null)" = true ] && return 0
		sleep 0.3
	done
	return 1
}
wait_node '.partitions == ["debug"]' 20 || bad "node $NODE: no partitions from Slurm after 20 s"
check "node: partitions,cpus from Slurm" "$(api "/v1/nodes/$NODE" | jq -c '[.partitions,.cpus>=1,.memory_total_bytes>0]')" '[["debug"],true,true]'
check "node: features from slurm.conf" "$(api "/v1/nodes?features=fakegpu" | jq -c '[.nodes[] | [.name, .features]]')" "[[\"$NODE\",[\"jobscope-dev\",\"fakegpu\"]]]"
scontrol update nodename="$NODE" state=drain reason="e2e drain"
wait_node '.state == "drained"' 20 || bad "node $NODE: drain not seen after 20 s"
check "node: drained,reason" "$(api "/v1/nodes/$NODE" | jq -c '[.state,.state_reason]')" '["drained","e2e drain"]'
scontrol update nodename="$NODE" state=resume
wait_node '.state != "drained" and .state_reason == null' 20 || bad "node $NODE: resume not seen after 20 s"

# Array: every task is its own job with the array's name.
n=0
for j in $(api '/v1/jobs?limit=1000' | jq -r '.jobs[] | select(.scheduler.extra.job_name == "arr") | .id'); do
	wait_final "$j" 60 || true
	n=$((n + 1))
done
check "array: tasks seen" "$n" 3
check "array: all completed" "$(api '/v1/jobs?limit=1000' | jq -c '[.jobs[] | select(.scheduler.extra.job_name == "arr") | .state] | unique')" '["completed"]'
check "array: array id and task ids" "$(api '/v1/jobs?limit=1000' | jq -c '[.jobs[] | select(.scheduler.extra.job_name == "arr") | .scheduler.extra] | map([.array_job_id, .array_task_id]) | sort_by(.[1])')" \
	"[[\"$J_ARR\",1],[\"$J_ARR\",2],[\"$J_ARR\",3]]"
check "spool empty while the server is up" "$(find "$SPOOL" -name '*.rec' | wc -l)" 0

# ---- partitions ----------------------------------------------------------------------------------------
# From slurmrestd within two reconcile intervals; a change is a partition_event on the SSE stream,
# and a running job counts in its partition.
say "=== partitions"
wait_partition() { # expr timeout_s: until the jq expression is true of partition debug in jobscope
	local t0=$SECONDS
	while ((SECONDS - t0 < $2)); do
		[ "$(api /v1/partitions/debug 2>/dev/null | jq -r "$1" 2>/dev/null)" = true ] && return 0
		sleep 0.3
	done
	return 1
}
wait_partition '.state == "up"' 20 || bad "partition debug not seen after 20 s"
check "partition: state,default,nodes,cpus" "$(api /v1/partitions/debug | jq -c '[.state,.is_default,.nodes,.total_cpus>=1]')" "[\"up\",true,[\"$NODE\"],true]"
curl -fsS -N -H "Authorization: Bearer $READER_TOKEN" "$BASE/v1/stream/partitions?states=DRAIN" \
	>"$WORK/partitions.sse" 2>/dev/null &
SSE_PID=$!
sleep 0.5
scontrol update partitionname=debug state=drain maxtime=90
wait_partition '.state == "drain"' 20 || bad "partition drain not seen after 20 s"
check "partition: drained, MaxTime" "$(api '/v1/partitions?state=drain' | jq -c '[.total, .partitions[0].limits.max_time_minutes]')" '[1,90]'
sleep 0.5
kill "$SSE_PID" 2>/dev/null || true
wait "$SSE_PID" 2>/dev/null || true
check "partition: SSE partition_event" "$(grep -c '^event: *partition_event' "$WORK/partitions.sse")" 1
check "partition: SSE data" "$(grep '^data:' "$WORK/partitions.sse" | tail -n1 | cut -c6- | jq -c '[.type,.stream,.data.partition.state]')" '["partition_updated","partitions","drain"]'
scontrol update partitionname=debug state=up maxtime=infinite
P1=$(submit -J counted --wrap 'sleep 15')
wait_partition '.state == "up" and .jobs_running == 1 and .limits.max_time_minutes == null' 30 ||
	bad "partition: running job not counted after 30 s ($(api /v1/partitions/debug | jq -c .))"
scancel "$P1"

# ---- job output ----------------------------------------------------------------------------------------
# The agent on the batch host tails the job's files (paths from scontrol show job, owner checked)
# and ships them; the SSE log stream shows every line in order while the job runs, the download
# equals the file byte for byte, and an output path the user replaced by a symlink to a root-only
# file yields no bytes, only the reason.
say "=== job output"
"$BIN" agent --server "$BASE" --token-file "$WORK/agent.token" --node "$NODE" --interval 1s \
	--spool-dir "$WORK/agent-spool" >>"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
OUT=$WORK/out
mkdir -p "$OUT"
chmod 0777 "$OUT"
printf 'root:not-for-users\n' >"$WORK/secret"
chmod 0600 "$WORK/secret"
as_test() { (cd /tmp && runuser -u "$TEST_USER" -- env SLURM_CONF="$SLURM_CONF" sbatch --parsable --chdir="$OUT" "$@" | cut -d';' -f1); }
J_LOG=$(as_test -J printer -o "$OUT/printer-%j.out" -e "$OUT/printer-%j.err" \
	--wrap 'for i in $(seq 1 10); do echo "line $i"; echo "err $i" >&2; sleep 1; done')
J_SYM=$(as_test -J sym -o "$OUT/sym-%j.out" --wrap "rm -f $OUT/sym-\$SLURM_JOB_ID.out; ln -s $WORK/secret $OUT/sym-\$SLURM_JOB_ID.out; sleep 6")
wait_api "$J_LOG" '.state == "running"' 60 || bad "job $J_LOG not running in jobscope"
as_admin() { curl -fsS -H "Authorization: Bearer $ADMIN_TOKEN" "$@"; }
timeout 90 curl -sSN -H "Authorization: Bearer $ADMIN_TOKEN" "$BASE/v1/stream/jobs/$J_LOG/log" >"$WORK/log.sse" &
LOG_SSE_PID=$!
wait_final "$J_LOG" 90 || bad "job $J_LOG not finished"
wait "$LOG_SSE_PID" 2>/dev/null || bad "log stream did not end with the job"
wait_final "$J_SYM" 60 || bad "job $J_SYM not finished"
kill "$AGENT_PID" 2>/dev/null || true
wait "$AGENT_PID" 2>/dev/null || true
expected=$(for i in $(seq 1 10); do echo "line $i"; done)
check "log: SSE text is every line in order" "$(grep '^data:' "$WORK/log.sse" | cut -c6- | jq -j 'select(.text) | .text')" "$expected"
check "log: SSE arrived while running (several log events)" "$(($(grep -c '^event: *log' "$WORK/log.sse") > 2))" 1
check "log: SSE ends with completed" "$(grep '^event:' "$WORK/log.sse" | tail -n1 | tr -d ' ')" "event:completed"
as_admin "$BASE/v1/jobs/$J_LOG/log/download" -o "$WORK/dl.out"
as_admin "$BASE/v1/jobs/$J_LOG/log/download?stream=stderr" -o "$WORK/dl.err"
check "log: download = the file" "$(cmp -s "$WORK/dl.out" "$OUT/printer-$J_LOG.out" && echo same)" same
check "log: stderr download = the file" "$(cmp -s "$WORK/dl.err" "$OUT/printer-$J_LOG.err" && echo same)" same
check "log: complete" "$(as_admin "$BASE/v1/jobs/$J_LOG/log" | jq -c '[.complete, .end_offset]')" "[true,$(stat -c %s "$OUT/printer-$J_LOG.out")]"
check "log: jobscope log --tail 2" "$("$BIN" log "$J_LOG" --tail 2 --server "$BASE" --token-file "$WORK/admin.token")" "$(printf 'line 9\nline 10')"
check "log: a reader may not read it" "$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $READER_TOKEN" "$BASE/v1/jobs/$J_LOG/log")" 403
check "log: symlinked output yields no bytes" "$(as_admin "$BASE/v1/jobs/$J_SYM/log" | jq -c '[.end_offset, .log_unavailable, (.text | contains("not-for-users"))]')" \
	'[0,"the output path is a symbolic link",false]'

# ---- users: Slurm's own JWTs ---------------------------------------------------------------------------
# alice and bob are local users (created if missing, like dev-slurm's test user); each runs a job.
say "=== users sign in with scontrol token"
for u in alice bob; do
	id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --comment 'jobscope e2e user' "$u" ||
		die "useradd $u failed"
done
check "jwt key: mode,owner" "$(stat -c '%a %U' "$JWT_KEY_FILE")" "600 root"
run_as() { (cd /tmp && runuser -u "$1" -- env SLURM_CONF="$SLURM_CONF" sbatch --parsable --chdir=/tmp -J "$2" --wrap 'sleep 1' | cut -d';' -f1); }
J_ALICE=$(run_as alice mine)
J_BOB=$(run_as bob theirs)
for j in $J_ALICE $J_BOB; do
	wait_final "$j" 60 || bad "job $j not finished in jobscope within 60 s (Slurm: $(slurm_state "$j"))"
done
ALICE_JWT=$(scontrol token username=alice lifespan=600 | sed -n 's/^SLURM_JWT=//p')
[ -n "$ALICE_JWT" ] || bad "scontrol token username=alice printed no SLURM_JWT"
as_alice() { curl -sS -H "Authorization: Bearer $ALICE_JWT" "$@"; }
check "alice: whoami" "$(as_alice "$BASE/v1/whoami" | jq -c '[.identity,.kind,.name,.jobs_visible]')" '["user:alice","user","alice","own"]'
check "alice: her job" "$(as_alice "$BASE/v1/jobs/$J_ALICE" | jq -c '[.id,.user,.state]')" "[\"$J_ALICE\",\"alice\",\"completed\"]"
check "alice: bob's job is 404" "$(as_alice -o /dev/null -w '%{http_code}' "$BASE/v1/jobs/$J_BOB")" 404
check "alice: bob's job answers as a missing one" "$(as_alice "$BASE/v1/jobs/$J_BOB" | jq -c 'del(.request_id)')" \
	"$(as_alice "$BASE/v1/jobs/no-such-job" | jq -c 'del(.request_id)')"
check "reader: bob's job is there" "$(field "$J_BOB" .user)" '"bob"'
check "alice: list is only hers" "$(as_alice "$BASE/v1/jobs?limit=1000" | jq -c '[.jobs[].user] | unique')" '["alice"]'
check "alice: list has her job, not bob's" \
	"$(as_alice "$BASE/v1/jobs?limit=1000" | jq -c "[.jobs[].id | select(. == \"$J_ALICE\" or . == \"$J_BOB\")]")" "[\"$J_ALICE\"]"
check "alice: ?user=bob is empty" "$(as_alice "$BASE/v1/jobs?user=bob" | jq '.jobs | length')" 0
check "alice: no writes" "$(as_alice -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/json' -d '{}' "$BASE/v1/jobs")" 403
BAD_JWT="${ALICE_JWT%.*}.$(printf 'x%.0s' {1..43})"
check "alice: tampered signature is 401" "$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BAD_JWT" "$BASE/v1/whoami")" 401

# ---- slurmrestd going away and coming back --------------------------------------------------------------
say "=== slurmrestd stopped: health degraded, then healthy again"
wait_health() { # status timeout_s
	local t0=$SECONDS
	while ((SECONDS - t0 < $2)); do
		[ "$(curl -fsS "$BASE/v1/health" 2>/dev/null | jq -r .status)" = "$1" ] && return 0
		sleep 0.3
	done
	return 1
}
"$REPO/scripts/dev-slurm.sh" restd stop >>"$WORK/dev-slurm.log" 2>&1
wait_health degraded 20 || bad "health not degraded 20 s after slurmrestd stopped"
check "health: degraded, says why" "$(curl -fsS "$BASE/v1/health" | jq -c '[.status, (.reason | test("slurmrestd"))]')" '["degraded",true]'
check "API still answers" "$(api "/v1/jobs/$J_OK" | jq -r .state)" completed
"$REPO/scripts/dev-slurm.sh" restd start >>"$WORK/dev-slurm.log" 2>&1 || bad "slurmrestd did not restart"
wait_health healthy 20 || bad "health not healthy 20 s after slurmrestd came back"

# ---- an epilog that never arrives ----------------------------------------------------------------------
say "=== epilogs blocked: the reconciler finalizes the job"
dev_slurm_start JOBSCOPE_EPILOG=/bin/true # both epilog slots now do nothing
B1=$(submit -J blocked --wrap 'sleep 1; exit 4')
wait_state "$B1" FAILED 60 || bad "job $B1 did not fail in Slurm"
wait_api "$B1" '.state == "failed"' 10 || bad "job $B1 not finalized within 10 s (5 intervals)"
check "blocked: state,exit,raw" "$(field "$B1" '[.state,.exit_code,.scheduler.raw_state]')" '["failed",4,"FAILED"]'
check "blocked: audit" "$(api "/v1/jobs/$B1/audit" | jq -c '[.events[].changed_by] | unique')" '["slurm-prolog","slurm-reconciler"]'
dev_slurm_start # epilogs back

# ---- server down ----------------------------------------------------------------------------------------
say "=== server down while jobs start and finish"
stop_serve
D1=$(submit -J down1 --wrap 'sleep 1')
D2=$(submit -J down2 --wrap 'sleep 1; exit 2')
for j in $D1 $D2; do
	t0=$SECONDS
	while ((SECONDS - t0 < 60)); do
		case $(slurm_state "$j") in COMPLETED | FAILED) break ;; esac
		sleep 0.3
	done
done
# Two prologs and two epilogs per job (controller and node). The epilogs run after the state
# changes, the controller's asynchronously: wait up to 20 s for all eight, then check the count.
t0=$SECONDS
while ((SECONDS - t0 < 20)) && (($(find "$SPOOL" -name '*.rec' | wc -l) < 8)); do sleep 0.3; done
sleep 1 # a ninth would be a hook spooled twice: give it the time to show
spooled=$(find "$SPOOL" -name '*.rec' | wc -l)
check "spooled events with the server down" "$spooled" 8
start_serve # without the reconciler: only the spool can bring these jobs back
D3=$(submit -J after --wrap 'true') # its hooks drain the spool first
wait_final "$D3" 60 || bad "job $D3 not finished"
for j in $D1 $D2; do wait_final "$j" 30 || bad "spooled job $j did not arrive"; done
check "down1 after the outage" "$(field "$D1" '[.state,.exit_code,.user,.scheduler.extra.job_name]')" '["completed",0,"root","down1"]'
check "down1: from the hooks" "$(api "/v1/jobs/$D1/audit" | jq -c '[.events[].changed_by] | unique')" '["slurm-epilog","slurm-prolog"]'
check "down2 after the outage" "$(field "$D2" '[.state,.exit_code]')" '["failed",2]'
check "down1 times are the hooks', not the delivery's" \
	"$(field "$D1" "(.end_time | sub(\"\\\\.[0-9]+\";\"\") | fromdateiso8601) < $(date +%s) - 1 and .runtime_seconds < 30")" true
check "spool empty after the outage" "$(find "$SPOOL" -name '*.rec' | wc -l)" 0

# ---- the efficiency report, calibrated -------------------------------------------------------------
# On Slurm with job cgroups (dev-slurm's JOBSCOPE_SLURM_CGROUP=1: proctrack/cgroup, task/cgroup,
# cgroup v1, memory consumable) and an agent reading them: a job holding 2 CPUs and 1 GiB that
# burns exactly one CPU for 10 s and holds 200 MiB must report CPU efficiency 50 % +- 5 % and
# memory use about 20 %. With E2E_SLURM_CGROUP=0, Slurm is restarted for it (same state, so job ids
# go on). The check fails, never skips, when the cgroups are not there.
#
# Error budget. efficiency = CPU time / (2 CPUs x elapsed). Elapsed is the hooks' (PrologSlurmctld
# to epilog, microseconds), not Slurm's whole-second start and end, which alone could move a
# 10 s job by 10 %: about 10.2 s of script (the loop's 10 s plus python's start and allocation)
# and 0.2-0.5 s of prologs and epilogs, so ~10.5 s -> 10.1 / 21 = 48 % with nothing lost. CPU time
# is the job cgroup's cumulative counter in the last sample; the cgroup is gone before the
# epilog, so what the job burns after that sample is lost: at most one interval of one CPU
# (the loop ends ~0.2 s before python, so usually nothing). With --interval 200ms the worst case
# is (10.1 - 0.2) / 21 = 47 %, and elapsed may grow to 11 s ((10.1 - 0.2) / 22 = 45 %) before
# the check fails; at the agent's usual 1 s the loss alone could take 5 points.
say "=== efficiency report, calibrated: Slurm with job cgroups, an agent reading them"
if [ "$SLURM_CGROUP" != 1 ]; then
	"$REPO/scripts/dev-slurm.sh" stop >>"$WORK/dev-slurm.log" 2>&1
	dev_slurm_start JOBSCOPE_SLURM_CGROUP=1
fi
# With the reconciler again (the outage above ran without it): it alone knows the job's memory.
stop_serve
start_serve "${SLURM_FLAGS[@]}"
check "cgroup mode: proctrack,task" "$(grep -E '^(ProctrackType|TaskPlugin)=' "$SLURM_CONF" | cut -d= -f2 | paste -sd,)" "proctrack/cgroup,task/cgroup"
wait_health healthy 30 || bad "health not healthy 30 s after Slurm restarted in cgroup mode"
RUST_LOG=jobscope=debug "$BIN" agent --server "$BASE" --token-file "$WORK/agent.token" --node "$NODE" \
	--interval 200ms --spool-dir "$WORK/agent-spool" >>"$WORK/agent-calibrate.log" 2>&1 &
AGENT_PID=$!
# The loop's own CPU time (bash's `time`), so a failure says whether the machine starved the loop
# or jobscope measured wrong.
cat >"$OUT/calibrate.sh" <<'JOB'
#!/bin/bash
t0=$(date +%s.%N)
python3 -c 'import time; b = b"x" * (200 << 20); time.sleep(10)' &
TIMEFORMAT='loop_cpu_seconds user %3U system %3S wall %3R'
{ time timeout 10 sh -c 'while :; do :; done'; } 2>&1
wait
awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "script_seconds %.3f\n", t1 - t0 }'
JOB
chmod 0755 "$OUT/calibrate.sh"
J_CAL=$(as_test -J calibrate -c 2 --mem=1G -o "$OUT/calibrate-%j.out" "$OUT/calibrate.sh")
wait_api "$J_CAL" '.state == "running"' 60 || bad "job $J_CAL not running in jobscope"
# slurmstepd makes the job's cgroup just after the prologs.
for ((i = 0; i < 50; i++)); do
	compgen -G "/sys/fs/cgroup/cpuacct/slurm*/uid_*/job_$J_CAL" >/dev/null && break
	sleep 0.1
done
compgen -G "/sys/fs/cgroup/cpuacct/slurm*/uid_*/job_$J_CAL" >/dev/null || bad "job $J_CAL: no cgroup under /sys/fs/cgroup/cpuacct/slurm*"
wait_final "$J_CAL" 90 || bad "job $J_CAL not finished in jobscope within 90 s (Slurm: $(slurm_state "$J_CAL"))"
# The last batch with the job's figures went out within one interval of the cgroup's removal,
# which came before the epilog: a second (five intervals) covers its delivery.
sleep 1
kill "$AGENT_PID" 2>/dev/null || true
wait "$AGENT_PID" 2>/dev/null || true
REPORT=$(api "/v1/jobs/$J_CAL/report")
printf '%s\n' "$REPORT" >"$WORK/calibrate-report.json"
say "  job $J_CAL: $(tr '\n' ' ' <"$OUT/calibrate-$J_CAL.out")(measured inside the job)"
say "  report: $(jq -c '{samples, cpu: .cpu | {allocated, efficiency, cpu_time_seconds}, elapsed: .time.elapsed_seconds, memory: .memory | {allocated_bytes, peak_bytes, use_ratio}}' <<<"$REPORT")"
check "calibrate: allocation 2 CPUs, 1 GiB" "$(jq -c '[.cpu.allocated, .memory.allocated_bytes]' <<<"$REPORT")" "[2,$((1 << 30))]"
# The loop burns one CPU of two for 10 s when the machine gives it one: 50 %. On a busy machine
# (CI beside other builds) it gets less, and the truth is then what it got: the loop's own CPU
# time (measured inside the job, by bash's `time`) over 2 CPUs and the job's elapsed time.
loop_cpu=$(awk '/^loop_cpu_seconds/ { print $3 + $5 }' "$OUT/calibrate-$J_CAL.out")
if awk -v c="${loop_cpu:-0}" 'BEGIN { exit !(c >= 9.5) }'; then
	check "calibrate: CPU efficiency 50 % +- 5 %" "$(jq '.cpu.efficiency != null and .cpu.efficiency >= 0.45 and .cpu.efficiency <= 0.55' <<<"$REPORT")" true
else
	say "  the machine was busy: the loop got ${loop_cpu:-0} s of CPU in 10 s, so the truth is less than 50 %"
	check "calibrate: CPU efficiency = loop's CPU / (2 CPUs x elapsed) +- 5 points" \
		"$(jq --arg loop "${loop_cpu:-0}" '.cpu.efficiency != null and .time.elapsed_seconds > 0 and ((.cpu.efficiency - ($loop | tonumber) / (2 * .time.elapsed_seconds)) | fabs) <= 0.05' <<<"$REPORT")" true
fi
check "calibrate: memory use about 20 %" "$(jq '.memory.use_ratio != null and .memory.use_ratio >= 0.18 and .memory.use_ratio <= 0.25' <<<"$REPORT")" true
check "calibrate: measured by cgroup counters" "$(jq -r .cpu.method <<<"$REPORT")" cpu_time
# Whatever the machine's load: the report's CPU time is what the loop burned plus python's start
# and allocation (~0.1-0.2 s), less at most one interval lost at the end.
check "calibrate: CPU time = the loop's own + python's (-0.3..+0.5 s)" \
	"$(jq --arg loop "${loop_cpu:-0}" '.cpu.cpu_time_seconds != null and (.cpu.cpu_time_seconds - ($loop | tonumber)) as $d | $d >= -0.3 and $d <= 0.5' <<<"$REPORT")" true
"$BIN" report "$J_CAL" --server "$BASE" --token-file "$WORK/admin.token" >"$WORK/calibrate-report.txt" 2>&1 ||
	bad "jobscope report $J_CAL failed: $(cat "$WORK/calibrate-report.txt")"
sed 's/^/  | /' "$WORK/calibrate-report.txt"

say ""
if ((FAILS)); then
	say "e2e-slurm: $FAILS check(s) failed"
	exit 1
fi
say "e2e-slurm: all checks passed"
