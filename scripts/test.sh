#!/usr/bin/env bash
# Runs jobscope's whole test suite: unit tests, and the integration suite on SQLite and on
# PostgreSQL. Makes sure a local PostgreSQL is up first (starting the Debian cluster if it is
# installed but stopped). Point the suite elsewhere with JOBSCOPE_TEST_POSTGRES_URL.
#
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${JOBSCOPE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export JOBSCOPE_TEST_POSTGRES_URL="$PG_URL"

pg_up() { pg_isready -q -d "$PG_URL" 2>/dev/null; }

if [[ "${JOBSCOPE_TEST_SKIP_POSTGRES:-0}" != 1 ]]; then
    if ! command -v pg_isready >/dev/null; then
        echo "test.sh: PostgreSQL client tools are missing; install them (apt-get install postgresql) or run .ci/run" >&2
        exit 1
    fi
    if ! pg_up && command -v pg_ctlcluster >/dev/null; then
        echo "test.sh: starting the local PostgreSQL cluster"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
    if ! pg_up; then
        echo "test.sh: PostgreSQL is not reachable at $PG_URL; the PostgreSQL half of the suite cannot run" >&2
        exit 1
    fi
fi

# `--database-read-url` is tested against a real streaming replica of the local cluster
# (tests/replica.rs). As root beside the Debian cluster this starts one on port 5433
# (scripts/dev-replica.sh); elsewhere point JOBSCOPE_TEST_REPLICA_URL at one, or those tests
# say they did not run.
if [[ "${JOBSCOPE_TEST_SKIP_POSTGRES:-0}" != 1 && -z "${JOBSCOPE_TEST_REPLICA_URL:-}" \
      && $EUID -eq 0 && "$PG_URL" == postgres://postgres@127.0.0.1:5432/* ]] \
      && command -v pg_ctlcluster >/dev/null; then
    # Stopped again at exit when this run started it: a replica left replaying every write
    # costs the machine CPU and would skew benchmarks run after the tests.
    if ! scripts/dev-replica.sh status >/dev/null 2>&1; then
        trap 'scripts/dev-replica.sh stop' EXIT
    fi
    if replica=$(scripts/dev-replica.sh start); then
        export JOBSCOPE_TEST_REPLICA_URL="$replica"
    else
        echo "test.sh: could not start a read replica; tests/replica.rs will not run" >&2
    fi
fi

# Benchmarks are not tests: they run with `cargo bench` (see BENCHMARKS.md).
cargo test --lib --bins --tests "$@"
