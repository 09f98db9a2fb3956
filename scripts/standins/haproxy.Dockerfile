# A stand-in for haproxy:2.8-alpine where no registry answers: Debian's HAProxy (2.6 on
# bookworm) and wget (the compose healthcheck uses it). Tests and air-gapped trials only.
ARG BASE=quarry-local/python:3.11-bookworm
FROM ${BASE}
RUN apt-get update -q && apt-get install -y -q --no-install-recommends haproxy wget \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /usr/local/etc/haproxy
CMD ["haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
