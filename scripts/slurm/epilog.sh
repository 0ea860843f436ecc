#!/bin/bash
# jobscope Slurm epilog hook: POST /v1/events/job-finished.
#
# Install as `Epilog=` (runs on every node of the job, as root) and/or `EpilogSlurmctld=` (runs once, on
# the controller, as SlurmUser). The two race; the server treats repeated events for a job as one.
#
# This is the no-spool alternative to `jobscope hook epilog`: one POST with a short timeout, and an event
# that cannot be delivered is logged (syslog, tag jobscope-hook) and lost. The Rust command spools it and
# retries; prefer it where the jobscope binary is installed on the nodes.
#
# It ALWAYS exits 0 and writes nothing to stdout/stderr. Slurm gives hooks no PATH, HOME or USER: every
# tool is called by absolute path. Needs jobscope-hook-lib.sh in the same directory as this script.
#
# Configuration: the same as prolog.sh (JOBSCOPE_SERVER, JOBSCOPE_TOKEN_FILE, JOBSCOPE_TIMEOUT,
# JOBSCOPE_HOOK_ENV, JOBSCOPE_HOOK_PRINT); see there.
#
# Payload: {"job_id","exit_code","signal","user","node_list":[...]}
#   exit_code:signal come from SLURM_JOB_EXIT_CODE2 (`3:0`), else from the raw wait status in
#   SLURM_JOB_EXIT_CODE (exit = (s>>8)&255, signal = s&127); if neither is there both are left out rather
#   than guessed. No final state is sent: cancelled and timed-out jobs look like exit 0 here, so the
#   server derives the state and confirms it with slurmrestd.

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

# exit_code and signal of the job in JH_EXIT / JH_SIGNAL; fails when Slurm gave neither variable.
jh_exit_status() {
	local s
	if [[ ${SLURM_JOB_EXIT_CODE2:-} =~ ^([0-9]{1,9}):([0-9]{1,9})$ ]]; then
		JH_EXIT=$((10#${BASH_REMATCH[1]}))
		JH_SIGNAL=$((10#${BASH_REMATCH[2]}))
		return 0
	fi
	if [[ ${SLURM_JOB_EXIT_CODE:-} =~ ^[0-9]{1,10}$ ]]; then
		s=$((10#$SLURM_JOB_EXIT_CODE))
		JH_EXIT=$(((s >> 8) & 255))
		JH_SIGNAL=$((s & 127))
		return 0
	fi
	return 1
}

main() {
	jh_load_env_file
	local job_id user json
	if ! jh_json_uint "${SLURM_JOB_ID:-}"; then
		jh_log "SLURM_JOB_ID missing or not a number; nothing sent"
		return 0
	fi
	job_id=$REPLY
	jh_env SLURM_JOB_USER
	user=$REPLY

	jh_json_str "$job_id"
	json="{\"job_id\":$REPLY"
	if jh_exit_status; then
		json+=",\"exit_code\":$JH_EXIT,\"signal\":$JH_SIGNAL"
	else
		jh_log "job $job_id: no SLURM_JOB_EXIT_CODE2/SLURM_JOB_EXIT_CODE; exit status left out"
	fi
	if [ -n "$user" ]; then
		jh_json_str "$user"
		json+=",\"user\":$REPLY"
	fi

	jh_node_list_json "$job_id"
	json+=",\"node_list\":$REPLY}"

	jh_post /v1/events/job-finished "$json"
}

exec 3>&1
main "$@" </dev/null >/dev/null 2>&1
exit 0
