#!/usr/bin/env bash
# Local stand-ins for the third-party images docker-compose.yml names (postgres, redis,
# haproxy), built on the local base from scripts/local-base-image.sh and tagged with the
# names the compose file uses, for trying the stack where no registry answers:
#
#   sudo scripts/local-base-image.sh
#   sudo scripts/local-standin-images.sh [BASE]    # default BASE: quarry-local/python:3.11-bookworm
#
# Never push these: production pulls the official images.
set -euo pipefail
BASE=${1:-quarry-local/python:3.11-bookworm}
HERE=$(cd "$(dirname "$0")/standins" && pwd)
COMPOSE=$(cd "$HERE/../.." && pwd)/docker-compose.yml
for name in postgres redis haproxy; do
    tag=$(grep -oE "image: ${name}:[^ ]+" "$COMPOSE" | head -1 | cut -d' ' -f2)
    docker build -q --network=host --build-arg "BASE=$BASE" -f "$HERE/$name.Dockerfile" \
        -t "$tag" "$HERE" >/dev/null
    echo "built $tag (stand-in)"
done
