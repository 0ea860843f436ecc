#!/usr/bin/env bash
# A real PostgreSQL streaming replica of the local Debian cluster, for `--database-read-url`
# (tests/replica.rs and trying it by hand). It is a hot standby made with pg_basebackup, on its
# own port, its data under /var/tmp; the primary is told to accept replication connections from
# 127.0.0.1 without a password, as it accepts the tests' own connections.
#
# Usage (as root, beside the Debian cluster):
#   scripts/dev-replica.sh start   # create (or restart) it; prints its server URL
#   scripts/dev-replica.sh stop
#   scripts/dev-replica.sh status  # exit 0 when it is running
#   scripts/dev-replica.sh url
# Settings: JOBSCOPE_REPLICA_DIR (default /var/tmp/jobscope-replica),
#           JOBSCOPE_REPLICA_PORT (default 5433).
set -euo pipefail

DIR="${JOBSCOPE_REPLICA_DIR:-/var/tmp/jobscope-replica}"
PORT="${JOBSCOPE_REPLICA_PORT:-5433}"
VERSION="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)"
if [[ -z "$VERSION" ]]; then
    echo "dev-replica.sh: no Debian PostgreSQL cluster under /etc/postgresql; install postgresql first" >&2
    exit 1
fi
BIN="/usr/lib/postgresql/$VERSION/bin"
HBA="/etc/postgresql/$VERSION/main/pg_hba.conf"
URL="postgres://postgres@127.0.0.1:$PORT/postgres"

as_postgres() { runuser -u postgres -- "$@"; }
running() { as_postgres "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }
in_recovery() {
    [[ "$(psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atc 'SELECT pg_is_in_recovery()' 2>/dev/null)" == t ]]
}

start() {
    if [[ $EUID -ne 0 ]]; then
        echo "dev-replica.sh: run as root (it runs PostgreSQL's tools as the postgres user)" >&2
        exit 1
    fi
    if running && in_recovery; then
        echo "$URL"
        return
    fi
    if ! grep -q '^host replication all 127.0.0.1/32 trust' "$HBA"; then
        sed -i '1i host replication all 127.0.0.1/32 trust' "$HBA"
        pg_ctlcluster --skip-systemctl-redirect "$VERSION" main reload
    fi
    # A copy made by an earlier run may be too far behind to catch up (its WAL recycled on the
    # primary): always start from a fresh one.
    if [[ -d "$DIR" ]]; then
        as_postgres "$BIN/pg_ctl" -D "$DIR" -m immediate stop >/dev/null 2>&1 || true
        rm -rf "$DIR"
    fi
    install -d -o postgres -g postgres -m 700 "$DIR"
    echo "dev-replica.sh: copying the primary (pg_basebackup)" >&2
    as_postgres "$BIN/pg_basebackup" -h 127.0.0.1 -p 5432 -U postgres -D "$DIR" \
        --write-recovery-conf --wal-method=stream --checkpoint=fast
    # Debian keeps the primary's configuration under /etc; the copy gets its own.
    cat > "$DIR/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
hot_standby = on
EOF
    printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' > "$DIR/pg_hba.conf"
    chown postgres:postgres "$DIR/postgresql.conf" "$DIR/pg_hba.conf"
    as_postgres "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 start >/dev/null
    for _ in $(seq 1 60); do
        in_recovery && break
        sleep 1
    done
    if ! in_recovery; then
        echo "dev-replica.sh: the replica did not come up as a standby; see $DIR/server.log" >&2
        tail -n 20 "$DIR/server.log" >&2 || true
        exit 1
    fi
    echo "$URL"
}

case "${1:-}" in
start) start ;;
stop) running && as_postgres "$BIN/pg_ctl" -D "$DIR" -m fast stop >/dev/null || true ;;
status) running ;;
url) echo "$URL" ;;
*)
    echo "usage: $0 start|stop|status|url" >&2
    exit 2
    ;;
esac
