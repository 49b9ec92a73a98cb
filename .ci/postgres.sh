# shellcheck shell=bash
# Sourced by .ci/run: make sure PostgreSQL is installed, start a throwaway cluster on
# 127.0.0.1 on a free port and export E2E_PG_DSN for the PostgreSQL store tests.
# Idempotent: a second source in the same shell reuses the running cluster.

e2e_pg_setup() {
    if [ -n "${E2E_PG_DSN:-}" ] && [ -n "${E2E_PG_DIR:-}" ] && [ -f "$E2E_PG_DIR/data/postmaster.pid" ]; then
        return 0
    fi
    local bindir=""
    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
        echo "postgres.sh: installing postgresql from Debian packages" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq postgresql >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq postgresql >/dev/null; } ||
            { echo "postgres.sh: apt-get install postgresql failed" >&2; return 1; }
        bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    fi
    local port
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')" || return 1
    local dir
    dir="$(mktemp -d /tmp/e2e-pg.XXXXXX)" || return 1
    chmod 755 "$dir"
    local run=()
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
        run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bindir/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; return 1; }
    "${run[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null ||
        { cat "$dir/server.log" >&2; return 1; }
    export E2E_PG_DIR="$dir"
    export E2E_PG_DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres"
    echo "postgres.sh: throwaway cluster on 127.0.0.1:$port ($dir)" >&2
}

e2e_pg_stop() {
    if [ -n "${E2E_PG_DIR:-}" ] && [ -d "$E2E_PG_DIR/data" ]; then
        local bindir
        bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
        if [ "$(id -u)" = 0 ]; then
            runuser -u postgres -- "$bindir/pg_ctl" -D "$E2E_PG_DIR/data" -m immediate stop >/dev/null 2>&1
        else
            "$bindir/pg_ctl" -D "$E2E_PG_DIR/data" -m immediate stop >/dev/null 2>&1
        fi
        rm -rf "$E2E_PG_DIR"
        unset E2E_PG_DIR E2E_PG_DSN
    fi
}

e2e_pg_setup
