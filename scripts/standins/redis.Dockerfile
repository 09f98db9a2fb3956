# A stand-in for redis:7.4-alpine where no registry answers: Debian's Redis (7.0 on
# bookworm), listening on every interface without protected mode as the official image
# does, working in /data. Tests and air-gapped trials only.
ARG BASE=quarry-local/python:3.11-bookworm
FROM ${BASE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
