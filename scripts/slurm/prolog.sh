#!/bin/bash
# jobscope Slurm prolog hook: POST /v1/events/job-started.
#
# Install as `Prolog=` (runs on every node of the job, as root) and/or `PrologSlurmctld=` (runs once, on
# the controller, as SlurmUser). Use `PrologFlags=Alloc` so salloc jobs without steps are seen too.
#
# This is the no-spool alternative to `jobscope hook prolog`: one POST with a short timeout, and an event
# that cannot be delivered is logged (syslog, tag jobscope-hook) and lost. The Rust command spools it and
# retries; prefer it where the jobscope binary is installed on the nodes.
#
# It ALWAYS exits 0 (a failing prolog drains the node) and writes nothing to stdout/stderr.
# Slurm gives hooks no PATH, HOME or USER: every tool is called by absolute path.
# Needs jobscope-hook-lib.sh (the shared helpers) in the same directory as this script.
#
# Configuration, from the environment or from /etc/jobscope/hook.env (path: JOBSCOPE_HOOK_ENV). The file is
# read as KEY=VALUE lines (optional `export `, optional quotes, # comments), never executed; a variable
# already in the environment wins over the file.
#   JOBSCOPE_SERVER      base URL, default http://127.0.0.1:8080
#   JOBSCOPE_TOKEN_FILE  file whose first line is a bearer token (sent as `Authorization: Bearer`; never
#                        logged, never on a command line). Must be readable by SlurmUser for the
#                        *Slurmctld hooks.
#   JOBSCOPE_TIMEOUT     seconds for the whole request (curl --max-time), default 2; `2`, `1.5`, `2s`
#   JOBSCOPE_GPU_VENDOR  gpu_vendor to report when the job has GPUs (default: nvidia, or amd on a node
#                        with /dev/kfd and no /dev/nvidiactl)
#   JOBSCOPE_HOOK_PRINT  =1: print the JSON payload on stdout instead of sending it (testing)
#
# Payload: {"job_id","user","node_list":[...],"cpu_allocation"?,"gpu_allocation"?,"gpu_devices"?,
#           "gpu_vendor"?,"partition"?,"account"?,"job_name"?,"sluid"?,"array_job_id"?,"array_task_id"?}
# Environment read: SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_NODELIST (slurmctld) or SLURM_NODELIST (node),
# SLURM_JOB_CPUS_PER_NODE, SLURM_JOB_GPUS, SLURM_JOB_PARTITION, SLURM_JOB_ACCOUNT, SLURM_JOB_NAME,
# SLURM_ARRAY_JOB_ID and SLURM_ARRAY_TASK_ID (slurmctld only), SLURM_JOB_SLUID (Slurm >= 26.05).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

# Shared helpers (jh_*: config, JSON, node lists, POST) from jobscope-hook-lib.sh in this script's
# directory. Without it: log (if logger exists) and exit 0, printing nothing.
unset JH_LIB_LOADED
JH_LIB=$(dirname -- "$0" 2>/dev/null)/jobscope-hook-lib.sh
# shellcheck source-path=SCRIPTDIR source=jobscope-hook-lib.sh
if ! { [ -r "$JH_LIB" ] && . "$JH_LIB" && [ "${JH_LIB_LOADED:-}" = 1 ]; } </dev/null >/dev/null 2>&1; then
	[ -x /usr/bin/logger ] && /usr/bin/logger -t jobscope-hook -p daemon.warning -- \
		"${0##*/}: cannot load $JH_LIB; event not sent" </dev/null >/dev/null 2>&1
	exit 0
fi

# Total CPUs from SLURM_JOB_CPUS_PER_NODE (`4`, `2(x3)`, `4,2(x2)`) in REPLY; fails on anything else.
jh_total_cpus() {
	local spec=$1 part total=0 IFS=,
	[ -n "$spec" ] || return 1
	for part in $spec; do
		if [[ $part =~ ^([0-9]{1,9})\(x([0-9]{1,9})\)$ ]]; then
			((total += 10#${BASH_REMATCH[1]} * 10#${BASH_REMATCH[2]}))
		elif [[ $part =~ ^[0-9]{1,9}$ ]]; then
			((total += 10#$part))
		else
			return 1
		fi
	done
	REPLY=$total
}

main() {
	jh_load_env_file
	local job_id user json v
	if ! jh_json_uint "${SLURM_JOB_ID:-}"; then
		jh_log "SLURM_JOB_ID missing or not a number; nothing sent"
		return 0
	fi
	job_id=$REPLY
	jh_env SLURM_JOB_USER
	user=$REPLY
	if [ -z "$user" ]; then
		jh_log "job $job_id: SLURM_JOB_USER missing; nothing sent"
		return 0
	fi

	jh_json_str "$job_id"
	json="{\"job_id\":$REPLY"
	jh_json_str "$user"
	json+=",\"user\":$REPLY"

	jh_node_list_json "$job_id"
	json+=",\"node_list\":$REPLY"

	if jh_total_cpus "${SLURM_JOB_CPUS_PER_NODE:-}"; then
		json+=",\"cpu_allocation\":$REPLY"
	fi

	if [ -n "${SLURM_JOB_GPUS:-}" ]; then
		local -a raw=() gpus=()
		IFS=, read -r -a raw <<<"$SLURM_JOB_GPUS"
		for v in "${raw[@]}"; do
			[ -n "$v" ] && gpus+=("$v")
		done
		if ((${#gpus[@]} > 0)); then
			jh_json_str_array "${gpus[@]}"
			json+=",\"gpu_allocation\":${#gpus[@]},\"gpu_devices\":$REPLY"
			v=${JOBSCOPE_GPU_VENDOR:-}
			if [ -z "$v" ]; then
				v=nvidia
				[ -e /dev/kfd ] && [ ! -e /dev/nvidiactl ] && v=amd
			fi
			jh_json_str "$v"
			json+=",\"gpu_vendor\":$REPLY"
		fi
	fi

	local var field
	for var in SLURM_JOB_PARTITION:partition SLURM_JOB_ACCOUNT:account SLURM_JOB_NAME:job_name \
		SLURM_JOB_SLUID:sluid SLURM_ARRAY_JOB_ID:array_job_id; do
		field=${var#*:}
		if jh_env "${var%%:*}"; then
			jh_json_str "$REPLY"
			json+=",\"$field\":$REPLY"
		fi
	done
	# A number, not a string: only digits are passed on.
	if jh_env SLURM_ARRAY_TASK_ID && [[ $REPLY =~ ^[0-9]{1,9}$ ]]; then
		json+=",\"array_task_id\":$((10#$REPLY))"
	fi
	json+='}'

	jh_post /v1/events/job-started "$json"
}

exec 3>&1
main "$@" </dev/null >/dev/null 2>&1
exit 0
