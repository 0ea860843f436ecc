#!/bin/bash
# dev-slurm.sh: a throw-away single-node Slurm for jobscope's development and integration tests.
#
# Debian's packages (slurmctld, slurmd, slurmrestd, munge), everything else under one directory
# (default /tmp/jobscope-slurm): its own munge key and socket, slurm.conf, state, logs, pid files,
# two fake GPUs (device nodes in the directory) and generated Prolog/Epilog wrappers that run jobscope's
# hooks. Nothing in /etc is written, apart from what apt installs and a local test user (see below).
# Needs root (slurmd runs jobs as their users).
#
#   scripts/dev-slurm.sh start          start (idempotent; when running, only refreshes the hook wrappers)
#   scripts/dev-slurm.sh status         daemons up/down, sinfo
#   scripts/dev-slurm.sh stop [--purge] cancel jobs, stop the daemons; --purge also removes the directory
#   scripts/dev-slurm.sh restd stop|start   stop or start slurmrestd alone (to try jobscope's degraded mode)
#
# Environment (read by `start`):
#   JOBSCOPE_SLURM_DIR     directory, default /tmp/jobscope-slurm
#   SLURMRESTD_PORT        slurmrestd TCP port on 127.0.0.1, default 6820
#   SLURMCTLD_PORT         default 6817;  SLURMD_PORT  default 6818
#   JOBSCOPE_SLURM_TEST_USER   second local user for jobs as someone else, default jobscope-test
#   JOBSCOPE_SLURM_WAIT    seconds to wait for the node and slurmrestd, default 60
#   JOBSCOPE_PROLOG / JOBSCOPE_EPILOG   hook executables (default: `jobscope hook prolog|epilog` with a
#                          built binary from $CARGO_TARGET_DIR, target/ or PATH, else scripts/slurm/*.sh)
#   JOBSCOPE_HOOK_BIN      a jobscope binary: hooks run `$JOBSCOPE_HOOK_BIN hook prolog|epilog`
#   JOBSCOPE_HOOK_CONFIG   its settings file (default <dir>/etc/hook.toml, usually absent)
#   JOBSCOPE_HOOK_SPOOL_DIR  its spool (default <dir>/hook-spool)
#   JOBSCOPE_SLURM_DUMP_HOOK_ENV=1   hooks also write their environment to <dir>/hook-env/<context>.<jobid>
#   JOBSCOPE_SLURM_CGROUP=1  jobs in cgroups (cgroup v1, the only one with controllers on these hosts):
#                          proctrack/cgroup, task/cgroup, jobacct_gather/cgroup (the only one that
#                          makes cpuacct directories), a cgroup.conf with ConstrainCores and
#                          ConstrainRAMSpace, and memory as a consumable resource (CR_Core_Memory, with
#                          DefMemPerNode=512 for a job without --mem, which would otherwise take the
#                          whole node). Job cgroups are then
#                          /sys/fs/cgroup/<controller>/slurm_<node>/uid_<uid>/job_<id>, which
#                          `jobscope agent` reads. Unset: proctrack/linuxproc, task/none, no job
#                          cgroups. A running cluster keeps its mode: `stop`, then `start` to switch.
#   JOBSCOPE_* (everything else, e.g. JOBSCOPE_SERVER, JOBSCOPE_TOKEN_FILE, JOBSCOPE_TIMEOUT) is copied
#   into the hook wrappers as it is at `start` time: Slurm runs hooks with an empty environment.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
DIR=${JOBSCOPE_SLURM_DIR:-/tmp/jobscope-slurm}
RESTD_PORT=${SLURMRESTD_PORT:-6820}
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
TEST_USER=${JOBSCOPE_SLURM_TEST_USER:-jobscope-test}
WAIT_S=${JOBSCOPE_SLURM_WAIT:-60}
PACKAGES=(slurm-wlm slurmctld slurmd slurmrestd slurm-client munge slurm-wlm-jwt-plugin)
SYSPATH=/usr/sbin:/usr/bin:/sbin:/bin
DAEMONS=(munged slurmctld slurmd slurmrestd)
CGROUP_MODE=${JOBSCOPE_SLURM_CGROUP:-0}

# Paths inside $DIR.
CONF=$DIR/etc/slurm.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
JWT_KEY=$DIR/etc/jwt.key
JWT_TOKEN=$DIR/jwt.token
RUN=$DIR/run
LOG=$DIR/log
HOOKS=$DIR/hooks

say() { printf '%s\n' "$*"; }
die() {
	printf 'dev-slurm: error: %s\n' "$*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

# ---- hook selection ---------------------------------------------------------------------------------
# The one place that decides what Slurm's Prolog/Epilog run by default: a built `jobscope` binary
# (`jobscope hook <kind>`: spools what it cannot deliver), else the curl scripts.
hook_binary() { # -> path of a jobscope binary, if one is built or installed
	local b
	for b in ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR/release/jobscope" "$CARGO_TARGET_DIR/debug/jobscope"} \
		"$REPO/target/release/jobscope" "$REPO/target/debug/jobscope" "$(command -v jobscope 2>/dev/null || true)"; do
		[ -n "$b" ] && [ -x "$b" ] && printf '%s\n' "$b" && return 0
	done
	return 1
}

hook_default() { # kind: prolog|epilog -> words of the command, one per line
	local bin
	if bin=$(hook_binary); then
		printf '%s\n' "$bin" hook "$1"
	else
		printf '%s\n' "$REPO/scripts/slurm/$1.sh"
	fi
}

hook_command() { # kind -> words of the command, one per line
	local kind=$1 override
	if [ "$kind" = prolog ]; then override=${JOBSCOPE_PROLOG:-}; else override=${JOBSCOPE_EPILOG:-}; fi
	if [ -n "$override" ]; then
		[ -x "$override" ] || die "JOBSCOPE_${kind^^}=$override is not an executable file"
		printf '%s\n' "$override"
	elif [ -n "${JOBSCOPE_HOOK_BIN:-}" ]; then
		[ -x "$JOBSCOPE_HOOK_BIN" ] || die "JOBSCOPE_HOOK_BIN=$JOBSCOPE_HOOK_BIN is not an executable file"
		printf '%s\n' "$JOBSCOPE_HOOK_BIN" hook "$kind"
	else
		hook_default "$kind"
	fi
}

# Write <dir>/hooks/{prolog,epilog}: set the JOBSCOPE_* environment of this `start`, exec the hook.
# Slurm re-reads the file for every job, so rewriting them takes effect at once.
write_hook_wrappers() {
	local kind tmp var
	local -a cmd
	mkdir -p "$HOOKS" "$DIR/hook-env"
	for kind in prolog epilog; do
		mapfile -t cmd < <(hook_command "$kind")
		((${#cmd[@]})) || exit 1
		[ -x "${cmd[0]}" ] || die "hook ${cmd[0]} is not executable"
		tmp=$HOOKS/.$kind.tmp
		{
			say '#!/bin/bash'
			say "# Generated by scripts/dev-slurm.sh start on $(date -Is); rewritten by every start."
			say "export PATH=$SYSPATH"
			# Keep the hooks away from /etc/jobscope/hook.env unless the caller chose a file.
			printf 'export JOBSCOPE_HOOK_ENV=%q\n' "${JOBSCOPE_HOOK_ENV:-$DIR/etc/hook.env}"
			# The same for `jobscope hook`: its settings file and spool stay in $DIR unless chosen.
			printf 'export JOBSCOPE_HOOK_CONFIG=%q\n' "${JOBSCOPE_HOOK_CONFIG:-$DIR/etc/hook.toml}"
			printf 'export JOBSCOPE_HOOK_SPOOL_DIR=%q\n' "${JOBSCOPE_HOOK_SPOOL_DIR:-$DIR/hook-spool}"
			while IFS= read -r var; do
				case $var in
				JOBSCOPE_SLURM_* | JOBSCOPE_PROLOG | JOBSCOPE_EPILOG | JOBSCOPE_HOOK_BIN | JOBSCOPE_HOOK_ENV | \
					JOBSCOPE_HOOK_CONFIG | JOBSCOPE_HOOK_SPOOL_DIR) ;;
				*) printf 'export %s=%q\n' "$var" "${!var}" ;;
				esac
			done < <(compgen -e | grep '^JOBSCOPE_' || true)
			if [ "${JOBSCOPE_SLURM_DUMP_HOOK_ENV:-}" = 1 ]; then
				# shellcheck disable=SC2016 # expanded by the wrapper, not here
				printf '/usr/bin/env >%q/"${SLURM_SCRIPT_CONTEXT:-%s}.${SLURM_JOB_ID:-0}" 2>/dev/null\n' \
					"$DIR/hook-env" "$kind"
			fi
			printf 'exec'
			printf ' %q' "${cmd[@]}"
			printf '\n'
		} >"$tmp"
		chmod 0700 "$tmp"
		mv -f "$tmp" "$HOOKS/$kind"
	done
	HOOK_DESC="$(hook_command prolog | paste -sd' ') | $(hook_command epilog | paste -sd' ')"
}

# ---- processes --------------------------------------------------------------------------------------
pidfile() { # munged runs as munge: its pid file lives in its own directory
	if [ "$1" = munged ]; then printf '%s\n' "$MUNGE_DIR/munged.pid"; else printf '%s\n' "$RUN/$1.pid"; fi
}

# pid of a daemon of ours from its pid file, if that process is alive and is that program.
daemon_pid() {
	local name=$1 pid comm file
	file=$(pidfile "$name")
	[ -r "$file" ] || return 1
	read -r pid <"$file" || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
	[ "$comm" = "$name" ] || return 1
	alive "$pid" || return 1
	printf '%s\n' "$pid"
}

alive() { # pid -> true while it exists and is not a zombie (a container's init may not reap it)
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[ "${stat%% *}" != Z ]
}

running() { daemon_pid "$1" >/dev/null; }

stop_daemon() {
	local name=$1 pid i
	pid=$(daemon_pid "$name") || {
		rm -f "$(pidfile "$name")"
		return 0
	}
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	if alive "$pid"; then
		say "  $name ($pid) did not stop in 10 s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$(pidfile "$name")"
	say "  stopped $name ($pid)"
}

# The daemons fork and write their pid file a moment later: wait for it (5 s).
wait_pidfile() {
	local i
	for ((i = 0; i < 50; i++)); do
		running "$1" && return 0
		sleep 0.1
	done
	fail_start "$1 did not come up (no live pid in $(pidfile "$1"))"
}

log_tails() {
	local f
	for f in "$LOG"/munged.log "$LOG"/slurmctld.log "$LOG"/slurmd.log "$LOG"/slurmrestd.log; do
		[ -s "$f" ] || continue
		printf '\n==> %s (last 15 lines) <==\n' "$f" >&2
		tail -n 15 "$f" >&2
	done
}

fail_start() {
	printf 'dev-slurm: error: %s\n' "$*" >&2
	log_tails
	printf '\nConfiguration: %s. Stop what did start with: %s stop\n' "$CONF" "$0" >&2
	exit 1
}

slurm_env() { env -i PATH="$SYSPATH" SLURM_CONF="$CONF" "$@"; }

port_busy() { # port -> true when something listens on 127.0.0.1:port or *:port
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ---- setup ------------------------------------------------------------------------------------------
install_packages() {
	local -a missing=()
	local p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	say "Installing ${missing[*]} (apt-get)..."
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1 || {
		apt-get update -q >>"$LOG/apt.log" 2>&1 || true
		apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG/apt.log" 2>&1
	} || {
		tail -n 20 "$LOG/apt.log" >&2
		die "apt-get install ${missing[*]} failed (see $LOG/apt.log)"
	}
}

ensure_test_user() {
	if ! id -u "$TEST_USER" >/dev/null 2>&1; then
		useradd --create-home --shell /bin/bash --comment 'jobscope dev-slurm test user' "$TEST_USER" ||
			die "useradd $TEST_USER failed"
		say "Created local user $TEST_USER (not removed by stop --purge: userdel -r $TEST_USER)"
	fi
}

# openapi plugins this slurmrestd has, minus the slurmdbd ones (no slurmdbd here): comma-separated.
restd_plugins() {
	local -a names=()
	local n
	while IFS= read -r n; do
		case $n in *db* | '') continue ;; esac
		names+=("$n")
	done < <(slurm_env setpriv --reuid=nobody --regid=nogroup --clear-groups slurmrestd -s list 2>&1 | grep -oE 'openapi/[A-Za-z0-9_.]+' | sort -u)
	((${#names[@]})) || return 1
	local IFS=,
	printf '%s\n' "${names[*]}"
}

write_config() {
	local host node_line
	host=$(hostname -s)
	mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool/slurmd" "$RUN" "$LOG" "$DIR/dev"
	chmod 0755 "$DIR" "$DIR/etc"

	# Fake GPUs: character devices with NVIDIA's major number; nothing opens them.
	local i
	for i in 0 1; do
		[ -c "$DIR/dev/nvidia$i" ] || mknod -m 0666 "$DIR/dev/nvidia$i" c 195 "$i"
	done

	if [ ! -s "$JWT_KEY" ]; then
		(umask 077 && head -c 32 /dev/urandom >"$JWT_KEY")
	fi
	chmod 0600 "$JWT_KEY"

	node_line=$(slurm_env slurmd -C 2>/dev/null | grep -m1 '^NodeName=') || fail_start "slurmd -C printed no NodeName line"
	# The node must be known under the name slurmd finds for itself; reach it on loopback.
	# Two node features, so jobscope's feature filters have something real to read.
	node_line="$node_line NodeAddr=127.0.0.1 Gres=gpu:2 Feature=jobscope-dev,fakegpu State=UNKNOWN"
	NODE_NAME=${node_line#NodeName=}
	NODE_NAME=${NODE_NAME%% *}

	local proctrack=proctrack/linuxproc task=task/none select=CR_Core def_mem='' gather=jobacct_gather/none
	rm -f "$DIR/etc/cgroup.conf"
	if [ "$CGROUP_MODE" = 1 ]; then
		proctrack=proctrack/cgroup task=task/cgroup select=CR_Core_Memory def_mem=DefMemPerNode=512
		# Only jobacct_gather/cgroup makes the jobs' cpuacct directories (task/cgroup makes cpuset,
		# memory and devices ones, proctrack freezer ones): without it no CPU time is measured.
		gather=jobacct_gather/cgroup
		# Slurm reads cgroup.conf from slurm.conf's directory.
		cat >"$DIR/etc/cgroup.conf" <<EOF
# Generated by scripts/dev-slurm.sh (JOBSCOPE_SLURM_CGROUP=1); rewritten by every start.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainCores=yes
ConstrainRAMSpace=yes
EOF
		chmod 0644 "$DIR/etc/cgroup.conf"
	fi

	cat >"$CONF.tmp" <<EOF
# Generated by scripts/dev-slurm.sh on $(date -Is); rewritten by every start.
ClusterName=jobscope-dev
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=$JWT_KEY
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=$proctrack
TaskPlugin=$task
SelectType=select/cons_tres
SelectTypeParameters=$select
$def_mem
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=$gather
GresTypes=gpu
ReturnToService=2
KillWait=5
MinJobAge=600
# Tests want jobs to start at once: don't batch up submissions (default batch_sched_delay=3 s).
SchedulerParameters=batch_sched_delay=0
PrologFlags=Alloc
Prolog=$HOOKS/prolog
Epilog=$HOOKS/epilog
PrologSlurmctld=$HOOKS/prolog
EpilogSlurmctld=$HOOKS/epilog
$node_line
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
	mv -f "$CONF.tmp" "$CONF"
	cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE_NAME Name=gpu File=$DIR/dev/nvidia[0-1]
EOF
	chmod 0644 "$CONF" "$DIR/etc/gres.conf"
}

start_munge() {
	running munged && return 0
	install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
	if [ ! -s "$MUNGE_DIR/munge.key" ]; then
		(umask 077 && head -c 1024 /dev/urandom >"$MUNGE_DIR/munge.key")
	fi
	chown munge:munge "$MUNGE_DIR/munge.key"
	chmod 0600 "$MUNGE_DIR/munge.key"
	touch "$LOG/munged.log"
	chown munge:munge "$LOG/munged.log"
	env -i PATH="$SYSPATH" setpriv --reuid=munge --regid=munge --init-groups \
		munged --key-file="$MUNGE_DIR/munge.key" --socket="$MUNGE_SOCKET" \
		--pid-file="$MUNGE_DIR/munged.pid" --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munge.seed" \
		>>"$LOG/munged.log" 2>&1 || fail_start "munged did not start"
	wait_pidfile munged
	local i
	for ((i = 0; i < 50; i++)); do
		if munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; then
			say "  munged up (socket $MUNGE_SOCKET)"
			return 0
		fi
		sleep 0.1
	done
	fail_start "munge socket $MUNGE_SOCKET does not answer"
}

start_slurmctld() {
	running slurmctld && return 0
	port_busy "$CTLD_PORT" && fail_start "port $CTLD_PORT is taken (another slurmctld?); set SLURMCTLD_PORT"
	slurm_env slurmctld -i >>"$LOG/slurmctld.log" 2>&1 || fail_start "slurmctld did not start"
	wait_pidfile slurmctld
	say "  slurmctld started"
}

start_slurmd() {
	running slurmd && return 0
	port_busy "$SLURMD_PORT" && fail_start "port $SLURMD_PORT is taken (another slurmd?); set SLURMD_PORT"
	slurm_env slurmd >>"$LOG/slurmd.log" 2>&1 || fail_start "slurmd did not start"
	wait_pidfile slurmd
	say "  slurmd started"
}

start_slurmrestd() {
	running slurmrestd && return 0
	port_busy "$RESTD_PORT" && fail_start "port $RESTD_PORT is taken; set SLURMRESTD_PORT"
	RESTD_PLUGINS=$(restd_plugins) || fail_start "slurmrestd -s list shows no openapi plugins"
	touch "$LOG/slurmrestd.log"
	# slurmrestd refuses to run as root. setpriv execs (no fork), so $! is slurmrestd itself.
	# SLURM_JWT=daemon: pass each client's X-SLURM-USER-TOKEN on to slurmctld (without it: all 401).
	nohup env -i PATH="$SYSPATH" SLURM_CONF="$CONF" SLURM_JWT=daemon \
		setpriv --reuid=nobody --regid=nogroup --clear-groups \
		slurmrestd -s "$RESTD_PLUGINS" -a rest_auth/jwt "127.0.0.1:$RESTD_PORT" \
		</dev/null >>"$LOG/slurmrestd.log" 2>&1 &
	echo $! >"$RUN/slurmrestd.pid"
	# nohup, env and setpriv exec each other: until the chain reaches slurmrestd, the pid's name is
	# one of theirs. Wait for it, or a loaded machine reads that as "slurmrestd exited".
	wait_pidfile slurmrestd
	printf '%s\n' "$RESTD_PLUGINS" >"$RUN/slurmrestd.plugins"
	say "  slurmrestd started on 127.0.0.1:$RESTD_PORT ($RESTD_PLUGINS)"
}

wait_node_idle() {
	local t0=$SECONDS state
	IDLE_T0=${IDLE_T0:-$SECONDS}
	while ((SECONDS - t0 < WAIT_S)); do
		running slurmctld || fail_start "slurmctld exited"
		running slurmd || fail_start "slurmd exited"
		state=$(slurm_env sinfo -h -n "$NODE_NAME" -o '%T' 2>/dev/null | head -n1) || state=''
		case $state in
		idle) break ;;
		drain* | down*)
			# A node left down/drained by a previous run (or a failed prolog): give it back.
			slurm_env scontrol update NodeName="$NODE_NAME" State=RESUME >/dev/null 2>&1 || true
			;;
		esac
		sleep 0.5
	done
	[ "$state" = idle ] || fail_start "node $NODE_NAME not idle after $WAIT_S s (state: ${state:-unknown}); $(slurm_env scontrol show node "$NODE_NAME" 2>/dev/null | grep -o 'Reason=.*' || true)"
	IDLE_AFTER=$((SECONDS - IDLE_T0))
	# slurmctld defers its first scheduling pass for a few seconds after it starts; until then a job
	# submitted to the idle node stays pending. Ready means the main scheduler has run once.
	local cycles=0
	while ((SECONDS - t0 < WAIT_S)); do
		cycles=$(slurm_env sdiag 2>/dev/null | sed -n 's/^[[:space:]]*Total cycles:[[:space:]]*\([0-9]*\).*/\1/p' | head -n1)
		((${cycles:-0} > 0)) && break
		sleep 0.3
	done
	((${cycles:-0} > 0)) || fail_start "slurmctld's scheduler has not run after $WAIT_S s"
	SCHED_AFTER=$((SECONDS - IDLE_T0))
}

# A JWT for user root in <dir>/jwt.token: `scontrol token`, else signed here (HS256 with the key).
make_token() {
	local tok='' lifespan=$((365 * 24 * 3600))
	tok=$(slurm_env scontrol token username=root lifespan="$lifespan" 2>/dev/null | sed -n 's/^SLURM_JWT=//p') || tok=''
	if [ -z "$tok" ] && [ -x /usr/bin/python3 ]; then
		tok=$(/usr/bin/python3 - "$JWT_KEY" "$lifespan" <<'PY'
import base64, hashlib, hmac, json, sys, time
key = open(sys.argv[1], 'rb').read()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b'=').decode()
now = int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"iat": now, "exp": now + int(sys.argv[2]), "sun": "root"}).encode())
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
		) || tok=''
	fi
	[ -n "$tok" ] || fail_start "could not make a JWT (scontrol token and python3 both failed)"
	(umask 022 && printf '%s\n' "$tok" >"$JWT_TOKEN")
}

# Newest v0.0.x plugin, for the URL shown (openapi/v0.0.38 -> v0.0.38).
restd_api_version() {
	local p
	p=$(tr ',' '\n' <"$RUN/slurmrestd.plugins" 2>/dev/null | grep -E '^openapi/v[0-9.]+$' | sort -V | tail -n1)
	printf '%s\n' "${p#openapi/}"
}

wait_restd() {
	local t0=$SECONDS ver code=''
	ver=$(restd_api_version)
	while ((SECONDS - t0 < WAIT_S)); do
		running slurmrestd || fail_start "slurmrestd exited"
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
			-H 'X-SLURM-USER-NAME: root' -H "X-SLURM-USER-TOKEN: $(cat "$JWT_TOKEN")" \
			"http://127.0.0.1:$RESTD_PORT/slurm/$ver/ping") || code=''
		[ "$code" = 200 ] && return 0
		sleep 0.3
	done
	fail_start "slurmrestd /slurm/$ver/ping did not answer 200 within $WAIT_S s (last: ${code:-no answer})"
}

write_env_file() {
	local ver
	ver=$(restd_api_version)
	cat >"$DIR/env" <<EOF
# source this: settings for clients of the dev-slurm cluster in $DIR
export SLURM_CONF=$CONF
export SLURMRESTD_URL=http://127.0.0.1:$RESTD_PORT
export SLURMRESTD_API_VERSION=$ver
export SLURMRESTD_USER=root
export SLURMRESTD_TOKEN_FILE=$JWT_TOKEN
export JOBSCOPE_SLURM_TEST_USER=$TEST_USER
EOF
	chmod 0644 "$DIR/env"
}

print_usage_info() {
	local ver
	ver=$(restd_api_version)
	cat <<EOF

Slurm $(slurm_env sinfo -V 2>/dev/null | awk '{print $2}') is up in $DIR (node $NODE_NAME, partition debug, 2 fake GPUs).
  jobs in cgroups: $([ -e "$DIR/etc/cgroup.conf" ] && echo "yes (v1: /sys/fs/cgroup/<controller>/slurm_$NODE_NAME/uid_<uid>/job_<id>)" || echo "no (JOBSCOPE_SLURM_CGROUP=1 to have them)")
  source $DIR/env                       # or: export SLURM_CONF=$CONF
  sbatch --wrap 'sleep 2'; sbatch --gres=gpu:1 --wrap 'sleep 2'; squeue; sinfo
  runuser -u $TEST_USER -- env SLURM_CONF=$CONF sbatch --chdir=/tmp --wrap 'sleep 2'   # as another user
slurmrestd: http://127.0.0.1:$RESTD_PORT  (plugins: $(cat "$RUN/slurmrestd.plugins"))
  curl -H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: \$(cat $JWT_TOKEN)" \\
       http://127.0.0.1:$RESTD_PORT/slurm/$ver/jobs
Hooks (Prolog/Epilog and PrologSlurmctld/EpilogSlurmctld): $HOOKS/{prolog,epilog}
  -> $HOOK_DESC
  posting to ${JOBSCOPE_SERVER:-http://127.0.0.1:8080 (hook default)}; run 'start' again to re-point them.
Logs: $LOG   Stop: $0 stop [--purge]
EOF
}

# ---- commands ---------------------------------------------------------------------------------------
cmd_start() {
	[ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their users)"
	local up=0 d
	for d in "${DAEMONS[@]}"; do running "$d" && up=$((up + 1)); done
	mkdir -p "$DIR" "$LOG" "$RUN"
	if ((up == ${#DAEMONS[@]})); then
		local running_mode=0
		[ -e "$DIR/etc/cgroup.conf" ] && running_mode=1
		[ "$running_mode" = "$CGROUP_MODE" ] ||
			die "running with JOBSCOPE_SLURM_CGROUP=$running_mode; stop it first to start with JOBSCOPE_SLURM_CGROUP=$CGROUP_MODE"
		NODE_NAME=$(slurm_env sinfo -h -N -o '%N' 2>/dev/null | head -n1)
		write_hook_wrappers
		say "dev-slurm is already running in $DIR; hook wrappers refreshed."
		print_usage_info
		return 0
	fi
	if ((up > 0)); then
		say "Some daemons are running, some not: restarting all."
		cmd_stop
	fi
	START_T0=$SECONDS
	install_packages
	ensure_test_user
	write_hook_wrappers
	write_config
	say "Starting in $DIR:"
	start_munge
	IDLE_T0=$SECONDS
	start_slurmctld
	start_slurmd
	wait_node_idle
	say "  node $NODE_NAME idle ${IDLE_AFTER}s after slurmctld started, scheduler running after ${SCHED_AFTER}s"
	make_token
	start_slurmrestd
	wait_restd
	write_env_file
	say "  slurmrestd answers (ready after $((SECONDS - START_T0))s in all)"
	print_usage_info
}

cmd_stop() {
	local purge=${1:-}
	[ "$purge" = "" ] || [ "$purge" = --purge ] || die "stop takes only --purge"
	if [ -d "$DIR" ]; then
		if running slurmctld; then
			# Leave no slurmstepd behind: cancel every job, give the epilogs a moment.
			local i
			slurm_env scancel --quiet --partition=debug >/dev/null 2>&1 || true
			for ((i = 0; i < 30; i++)); do
				[ -z "$(slurm_env squeue -h -t R,CG,CF -o %i 2>/dev/null)" ] && break
				sleep 0.5
			done
		fi
		say "Stopping dev-slurm in $DIR:"
		local d
		for d in slurmrestd slurmd slurmctld munged; do stop_daemon "$d"; done
		# Cgroup mode: slurmd leaves its (by now empty) v1 directories behind; remove them, deepest
		# first. A directory that still holds a process refuses (EBUSY) and stays.
		if [ -e "$DIR/etc/cgroup.conf" ]; then
			for d in /sys/fs/cgroup/*/slurm /sys/fs/cgroup/*/slurm_*; do
				[ -d "$d" ] && { find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
			done
			say "  removed Slurm's cgroup directories"
		fi
	fi
	if [ "$purge" = --purge ]; then
		case $DIR in
		/ | /tmp | /root | /home | /usr | /var | /etc | '') die "refusing to remove $DIR" ;;
		esac
		rm -rf --one-file-system "$DIR"
		say "Removed $DIR"
	fi
}

cmd_status() {
	local d pid rc=0
	say "dev-slurm in $DIR:"
	for d in "${DAEMONS[@]}"; do
		if pid=$(daemon_pid "$d"); then say "  $d: up (pid $pid)"; else
			say "  $d: down"
			rc=3
		fi
	done
	if running slurmctld; then
		say ""
		slurm_env sinfo || true
		slurm_env squeue || true
	fi
	[ -r "$DIR/env" ] && say "" && say "Settings: source $DIR/env"
	return "$rc"
}

cmd_restd() {
	[ "$(id -u)" = 0 ] || die "must run as root"
	running slurmctld || die "dev-slurm is not running in $DIR; start it first"
	case ${1:-} in
	stop) stop_daemon slurmrestd ;;
	start)
		start_slurmrestd
		wait_restd
		say "  slurmrestd answers"
		;;
	*) die "restd takes stop or start" ;;
	esac
}

case ${1:-} in
start) cmd_start ;;
restd)
	shift
	cmd_restd "$@"
	;;
stop)
	shift
	cmd_stop "$@"
	;;
status) cmd_status ;;
-h | --help | help) usage ;;
*)
	usage >&2
	exit 2
	;;
esac
