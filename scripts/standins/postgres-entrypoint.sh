#!/bin/sh
# What the official image's entrypoint does, as far as Quarry's compose file relies on it.
set -eu
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$(dirname "$PGDATA")" /run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
    user=${POSTGRES_USER:-postgres}
    printf '%s\n' "$POSTGRES_PASSWORD" > /tmp/pwfile
    chown postgres /tmp/pwfile
    gosu postgres initdb -D "$PGDATA" -U "$user" --pwfile=/tmp/pwfile --auth-local=trust \
        --auth-host=scram-sha-256 >/dev/null
    rm -f /tmp/pwfile
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    db=${POSTGRES_DB:-$user}
    if [ "$db" != "postgres" ]; then
        gosu postgres postgres -D "$PGDATA" -c listen_addresses='' &
        until gosu postgres pg_isready -q -U "$user" -d postgres; do sleep 0.2; done
        gosu postgres createdb -U "$user" "$db"
        gosu postgres pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
fi
if [ "$1" = "postgres" ]; then
    exec gosu postgres "$@" -D "$PGDATA"
fi
exec "$@"
