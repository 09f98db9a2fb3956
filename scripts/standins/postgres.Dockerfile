# A stand-in for postgres:16.6-alpine where no registry answers: Debian's PostgreSQL (15 on
# bookworm) behind an entrypoint that honours the official image's POSTGRES_USER,
# POSTGRES_PASSWORD, POSTGRES_DB and PGDATA, with pg_isready on PATH. Tests and air-gapped
# trials only: production pulls the official image.
ARG BASE=quarry-local/python:3.11-bookworm
FROM ${BASE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends postgresql gosu \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/lib/postgresql/*/bin/* /usr/local/bin/ 2>/dev/null || true
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PGDATA=/var/lib/postgresql/data
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
