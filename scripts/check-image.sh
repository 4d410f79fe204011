#!/usr/bin/env bash
# Builds the CPU container image from the Dockerfile with buildah, starts the server in it as the
# image's CMD does, and checks what a caller sees: /healthz ready, one small stylize, the page and
# /openapi.json. Prints the image's size, the build's seconds and the seconds to ready (DEPLOY.md
# keeps them). It takes minutes (installing, fetching the weights, compiling the warm-up
# programs), so it is not one of the tests.
#
# Usage: scripts/check-image.sh [--debian-base] [buildah build argument ...]
#   --debian-base  build FROM a base image made here from Debian bookworm's python3 (debootstrap),
#                  for a machine that cannot pull the Dockerfile's python:3.11.10-slim-bookworm
#   e.g. scripts/check-image.sh --debian-base --build-arg WARMUP=256
# Needs root, buildah, curl and python3 (and debootstrap for --debian-base). Environment: IMAGE
# (default localhost/neurastyle:check) and PORT (default 18080: the server runs on this
# machine's network, as `buildah run --isolation chroot` does not give it one of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/neurastyle:check}
PORT=${PORT:-18080}
BASE=localhost/neurastyle-base:bookworm
CA_BUNDLE=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
build_args=()
if [ "${1:-}" = --debian-base ]; then
    shift
    build_args+=(--build-arg "PYTHON_IMAGE=$BASE")
fi

# What python:3.11-slim offers the Dockerfile: python and pip on PATH, a pip that may install
# (Debian's own python3 refuses, PEP 668: hence a venv on PATH), certificates for PyPI, useradd;
# and this machine's trust: its CA bundle (where a proxy inspects TLS, PyPI's certificate is
# signed by the proxy's CA, which Debian's bundle and pip's own do not hold).
make_debian_base() {
    local root
    root=$(mktemp -d /var/tmp/neurastyle-base.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" \
        http://deb.debian.org/debian
    chroot "$root" python3 -m venv /opt/python
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    local ctr
    ctr=$(buildah from scratch)
    buildah copy --quiet "$ctr" "$root" /
    buildah copy --quiet "$ctr" "$CA_BUNDLE" /etc/ssl/certs/ca-certificates.crt
    buildah config --env PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 "$ctr"
    buildah commit --quiet --format docker "$ctr" "$BASE"
    buildah rm "$ctr" >/dev/null
    rm -rf "$root"
}

if [ ${#build_args[@]} -gt 0 ] && ! buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    echo "== making $BASE"
    make_debian_base
fi

echo "== building $IMAGE"
start=$(date +%s.%N)
# docker format: OCI images have no HEALTHCHECK
buildah build --isolation chroot --format docker --layers "${build_args[@]}" "$@" -t "$IMAGE" .
build_s=$(echo "$(date +%s.%N) - $start" | bc)

# The image's own command, environment, user and working directory, with PORT moved off 8080.
cmd_lines=$(buildah inspect --type image "$IMAGE" |
            python3 -c 'import json, sys; print("\n".join(json.load(sys.stdin)["Docker"]["config"]["Cmd"]))')
mapfile -t cmd <<<"$cmd_lines"
ctr=$(buildah from "$IMAGE")
log=$(mktemp)
cleanup() {
    if [ -n "${server:-}" ]; then kill -TERM -- "-$server" 2>/dev/null; wait "$server" || true; fi
    buildah rm "$ctr" >/dev/null
    rm -f "$log" "${body:-}"
}
trap cleanup EXIT
url=http://127.0.0.1:$PORT
if curl -s -o /dev/null "$url/"; then echo "port $PORT is taken: PORT=... $0" >&2; exit 1; fi

echo "== starting: ${cmd[*]}"
start=$(date +%s.%N)
# a process group of its own: buildah does not pass a SIGTERM on to the server, the group gets it
setsid buildah run --isolation chroot --env PORT="$PORT" "$ctr" -- "${cmd[@]}" >"$log" 2>&1 &
server=$!
until curl -sf -o /dev/null "$url/healthz"; do
    if ! kill -0 "$server" 2>/dev/null; then cat "$log"; echo "the server stopped" >&2; exit 1; fi
    if [ "$(echo "$(date +%s.%N) - $start > 900" | bc)" = 1 ]; then cat "$log"; echo "not ready in 900 s" >&2; exit 1; fi
    sleep 0.2
done
ready_s=$(echo "$(date +%s.%N) - $start" | bc)

check() { echo "ok: $*"; }
curl -sf "$url/healthz" | python3 -c 'import json, sys; h = json.load(sys.stdin); assert h["ready"] is True, h; print(h)'
check "/healthz ready"
body=$(mktemp)
preset=$(curl -sf "$url/config" | python3 -c 'import json, sys; print(json.load(sys.stdin)["style_presets"][0]["name"])')
photo=$(ls web/styles/*.jpg | head -1)  # any picture will do
printf '{"content_image": "%s", "style_preset": "%s", "options": {"size": 64, "steps": 4}}' \
    "$(base64 -w0 "$photo")" "$preset" > "$body"
curl -sf -H 'Content-Type: application/json' --data-binary "@$body" "$url/stylize" | python3 -c '
import base64, json, sys
answer = json.load(sys.stdin)
assert base64.b64decode(answer["image"]).startswith(b"\x89PNG"), "not a PNG"
assert max(answer["width"], answer["height"]) == 64, answer
print({k: v for k, v in answer.items() if k != "image"})'
check "a 64 px stylize of $photo as $preset"
[[ $(curl -sf "$url/") == *"<html"* ]] || { echo "GET / is not the page" >&2; exit 1; }
check "the page"
curl -sf "$url/openapi.json" | python3 -c 'import json, sys; d = json.load(sys.stdin); assert d["openapi"].startswith("3.1"), d["openapi"]; print(len(d["paths"]), "paths")'
check "/openapi.json"
user=$(buildah run --isolation chroot "$ctr" -- id -un)

grep -E "shape families|warm-up done" "$log" || true  # what the start-up warm-up did
size=$(buildah images --format '{{.Size}}' "$IMAGE" | head -1)
echo "== $IMAGE: $size, built in $build_s s, ready $ready_s s after start, serving as $user"
