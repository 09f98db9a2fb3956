#!/usr/bin/env bash
# Build a local stand-in for the images' base (python:3.11-slim-bookworm) where no registry
# can be reached: a Debian bookworm root filesystem from debootstrap, with Debian's Python
# 3.11 in a venv at /usr/local (the official image's layout: `pip install --prefix` and
# /usr/local/lib/python3.11/site-packages line up). The host's CA bundle is copied in, so a
# build behind a TLS-inspecting proxy reaches the package registries.
#
#   sudo scripts/local-base-image.sh [TAG]        # default TAG: quarry-local/python:3.11-bookworm
#   make images PYTHON_IMAGE=quarry-local/python:3.11-bookworm
#
# Needs root, debootstrap and a running Docker engine. For air-gapped builds and tests only:
# production images use the pinned official base (Debian's Python is 3.11.2).
set -euo pipefail

TAG=${1:-quarry-local/python:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
tar -C "$WORK/rootfs" -c . | docker import - "$TAG-rootfs" >/dev/null

mkdir "$WORK/context"
cp /etc/ssl/certs/ca-certificates.crt "$WORK/context/"
cat >"$WORK/context/Dockerfile" <<DOCKERFILE
FROM $TAG-rootfs
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /usr/local && /usr/local/bin/python -m pip --version
ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \\
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
DOCKERFILE
docker build -q -t "$TAG" "$WORK/context" >/dev/null
echo "built $TAG"
