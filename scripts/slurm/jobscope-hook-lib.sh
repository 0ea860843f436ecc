# shellcheck shell=bash
# jobscope-hook-lib.sh: helpers shared by prolog.sh and epilog.sh, which source it from their own
# directory. Not executable on its own; install it next to them (see README.md).
#
# Sourced with PATH=/usr/sbin:/usr/bin:/sbin:/bin and LC_ALL=C already exported by the hook, and with
# stdout/stderr on /dev/null. It only defines functions and variables (nothing runs), so it is safe to
# source again. Every tool is called by absolute path: Slurm gives hooks no PATH, HOME or USER.
#
# Configuration read by these helpers, from the environment or from /etc/jobscope/hook.env (path:
# JOBSCOPE_HOOK_ENV). The file is read as KEY=VALUE lines (optional `export `, optional quotes,
# # comments), never executed; a variable already in the environment wins over the file.
#   JOBSCOPE_SERVER      base URL, default http://127.0.0.1:8080
#   JOBSCOPE_TOKEN_FILE  file whose first line is a bearer token (sent as `Authorization: Bearer`; never
#                        logged, never on a command line). Must be readable by SlurmUser for the
#                        *Slurmctld hooks.
#   JOBSCOPE_TIMEOUT     seconds for the whole request (curl --max-time), default 2; `2`, `1.5`, `2s`
#   JOBSCOPE_GPU_VENDOR  (prolog) gpu_vendor to report when the job has GPUs
#   JOBSCOPE_HOOK_PRINT  =1: print the JSON payload on fd 3 (the hook's stdout) instead of sending it

shopt -u patsub_replacement 2>/dev/null # bash 5.2: '&' in ${s//x/y} would mean "the match"

JH_NAME=${0##*/}

jh_log() {
	[ -x /usr/bin/logger ] && /usr/bin/logger -t jobscope-hook -p daemon.warning -- "$JH_NAME: $*"
	return 0
}

# Read KEY=VALUE lines for the keys we know; never execute the file. The environment wins.
jh_load_env_file() {
	local file=${JOBSCOPE_HOOK_ENV:-/etc/jobscope/hook.env} line key val
	[ -r "$file" ] || return 0
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%$'\r'}
		line=${line#"${line%%[![:space:]]*}"}
		case $line in '' | '#'*) continue ;; esac
		line=${line#export }
		key=${line%%=*}
		[ "$key" = "$line" ] && continue
		val=${line#*=}
		case $val in
		\"*\") val=${val:1:${#val}-2} ;;
		\'*\') val=${val:1:${#val}-2} ;;
		esac
		case $key in
		JOBSCOPE_SERVER | JOBSCOPE_TOKEN_FILE | JOBSCOPE_TIMEOUT | JOBSCOPE_GPU_VENDOR)
			[ -z "${!key+x}" ] && printf -v "$key" '%s' "$val"
			;;
		esac
	done <"$file"
	return 0
}

# Value of the variable named $1 in REPLY; fails when unset, empty or Slurm's "(null)" (e.g.
# SLURM_JOB_ACCOUNT without accounting).
jh_env() {
	REPLY=${!1:-}
	[ "$REPLY" = '(null)' ] && REPLY=''
	[ -n "$REPLY" ]
}

# JSON string literal of $1 in REPLY: escapes \ " and control characters, keeps valid UTF-8 only.
jh_json_str() {
	local s=$1 i hex c
	if [[ $s == *[$'\x80'-$'\xff']* ]]; then
		if [ -x /usr/bin/iconv ]; then
			s=$(printf '%s' "$s" | /usr/bin/iconv -f UTF-8 -t UTF-8 -c 2>/dev/null)
		else
			s=${s//[$'\x80'-$'\xff']/?}
		fi
	fi
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
		s=${s//$'\n'/\\n}
		s=${s//$'\r'/\\r}
		s=${s//$'\t'/\\t}
		for ((i = 1; i < 32; i++)); do
			printf -v hex '%02x' "$i"
			printf -v c '%b' "\\x$hex"
			[[ $s == *"$c"* ]] && s=${s//"$c"/\\u00$hex}
		done
	fi
	REPLY="\"$s\""
}

# Canonical JSON integer of $1 in REPLY (no sign, no leading zeros); fails unless $1 is 1..18 digits.
jh_json_uint() {
	[[ $1 =~ ^[0-9]{1,18}$ ]] || return 1
	REPLY=$((10#$1))
}

# JSON array of strings in REPLY from the arguments.
jh_json_str_array() {
	local -a out=()
	local x IFS=,
	for x in "$@"; do
		jh_json_str "$x"
		out+=("$REPLY")
	done
	REPLY="[${out[*]}]"
}

# Expand one hostlist term with brackets (`rack[1-2]-n[01-03,7]`) into the array JH_HOSTS.
jh_expand_term() {
	local term=$1 prefix inner rest item lo hi w n c
	local -a tails=() out=()
	if [[ $term != *'['* ]]; then
		JH_HOSTS+=("$term")
		return 0
	fi
	prefix=${term%%'['*}
	inner=${term#*'['}
	[[ $inner == *']'* ]] || return 1
	rest=${inner#*']'}
	inner=${inner%%']'*}
	# expand the tail first (it may hold more bracket groups)
	local -a saved=("${JH_HOSTS[@]}")
	JH_HOSTS=()
	jh_expand_term "$rest" || return 1
	tails=("${JH_HOSTS[@]}")
	JH_HOSTS=("${saved[@]}")
	local IFS=,
	for item in $inner; do
		if [[ $item =~ ^([0-9]+)-([0-9]+)$ ]]; then
			lo=${BASH_REMATCH[1]} hi=${BASH_REMATCH[2]}
		elif [[ $item =~ ^[0-9]+$ ]]; then
			lo=$item hi=$item
		else
			return 1
		fi
		((${#lo} <= 9 && ${#hi} <= 9)) || return 1
		w=${#lo}
		for ((n = 10#$lo; n <= 10#$hi; n++)); do
			((${#JH_HOSTS[@]} < 100000)) || return 1
			printf -v item '%0*d' "$w" "$n"
			for c in "${tails[@]}"; do JH_HOSTS+=("$prefix$item$c"); done
		done
	done
	return 0
}

# Expand a Slurm hostlist (`node[01-03,07],gpu5,a[1-2]b[3-4]`) into JH_HOSTS, in Slurm's order.
jh_expand_hostlist() {
	local list=$1 term='' depth=0 i ch out
	JH_HOSTS=()
	if [ -x /usr/bin/scontrol ]; then
		# `scontrol show hostnames` is local (no RPC) but may want slurm.conf: fall back if it fails.
		local -a tmo=()
		[ -x /usr/bin/timeout ] && tmo=(/usr/bin/timeout 2)
		if out=$("${tmo[@]}" /usr/bin/scontrol show hostnames "$list" 2>/dev/null) && [ -n "$out" ]; then
			mapfile -t JH_HOSTS <<<"$out"
			return 0
		fi
	fi
	for ((i = 0; i <= ${#list}; i++)); do
		ch=${list:i:1}
		case $ch in
		'[') ((depth++)) ;;
		']') ((depth--)) ;;
		esac
		if [ -z "$ch" ] || { [ "$ch" = , ] && [ "$depth" -eq 0 ]; }; then
			if [ -n "$term" ]; then
				jh_expand_term "$term" || return 1
			fi
			term=''
		else
			term+=$ch
		fi
	done
	return 0
}

# POST $2 (JSON) to $JOBSCOPE_SERVER$1. Logs failures; never fails.
jh_post() {
	local path=$1 body=$2 server timeout token='' code rc
	if [ "${JOBSCOPE_HOOK_PRINT:-}" = 1 ]; then
		printf '%s\n' "$body" >&3
		return 0
	fi
	server=${JOBSCOPE_SERVER:-http://127.0.0.1:8080}
	server=${server%/}
	case $server in
	http://* | https://*) ;;
	*)
		jh_log "job ${SLURM_JOB_ID:-?}: JOBSCOPE_SERVER is not an http(s) URL; event not sent"
		return 0
		;;
	esac
	timeout=${JOBSCOPE_TIMEOUT:-2}
	timeout=${timeout%s}
	if ! [[ $timeout =~ ^[0-9]{1,4}(\.[0-9]+)?$ ]]; then
		jh_log "invalid JOBSCOPE_TIMEOUT, using 2"
		timeout=2
	fi
	if [ ! -x /usr/bin/curl ]; then
		jh_log "job ${SLURM_JOB_ID:-?}: /usr/bin/curl not found; event not sent"
		return 0
	fi
	if [ -n "${JOBSCOPE_TOKEN_FILE:-}" ]; then
		if [ -r "$JOBSCOPE_TOKEN_FILE" ]; then
			IFS= read -r token <"$JOBSCOPE_TOKEN_FILE"
			token=${token//[[:space:]]/}
			[ -z "$token" ] && jh_log "token file $JOBSCOPE_TOKEN_FILE is empty; sending without Authorization"
		else
			jh_log "token file $JOBSCOPE_TOKEN_FILE is not readable; sending without Authorization"
		fi
	fi
	local -a args=(-q -s -o /dev/null -w '%{http_code}' --max-time "$timeout" -X POST
		-H 'Content-Type: application/json' -H "User-Agent: jobscope-hook-sh/1 ($JH_NAME)"
		--data-binary @-)
	# The token goes through a pipe (-H @file), never through argv where ps would show it.
	if [ -n "$token" ]; then
		code=$(printf '%s' "$body" | /usr/bin/curl "${args[@]}" \
			-H @<(printf 'Authorization: Bearer %s\n' "$token") "$server$path" 2>/dev/null)
	else
		code=$(printf '%s' "$body" | /usr/bin/curl "${args[@]}" "$server$path" 2>/dev/null)
	fi
	rc=$?
	if [ "$rc" -ne 0 ]; then
		jh_log "job ${SLURM_JOB_ID:-?}: POST $server$path failed (curl exit $rc); event lost"
	elif [[ $code != 2?? ]]; then
		jh_log "job ${SLURM_JOB_ID:-?}: POST $server$path answered HTTP $code; event lost"
	fi
	return 0
}

# JSON array of the job's nodes in REPLY, from SLURM_JOB_NODELIST (slurmctld) or SLURM_NODELIST (node);
# `[]` when neither is set, the unexpanded list as one element when it cannot be expanded. $1: job id (log).
jh_node_list_json() {
	local nodelist
	jh_env SLURM_JOB_NODELIST || jh_env SLURM_NODELIST
	nodelist=$REPLY
	if [ -n "$nodelist" ]; then
		if ! jh_expand_hostlist "$nodelist"; then
			jh_log "job $1: cannot expand node list; sending it unexpanded"
			JH_HOSTS=("$nodelist")
		fi
	else
		JH_HOSTS=()
	fi
	jh_json_str_array "${JH_HOSTS[@]}"
}

# Set last: the hook checks it, so a truncated copy of this file counts as missing.
# shellcheck disable=SC2034 # read by the sourcing hook
JH_LIB_LOADED=1
