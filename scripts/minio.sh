#!/usr/bin/env bash
# MinIO for the tests that need S3 conditional writes (If-None-Match: *), which Garage
# 2.5.0 ignores: the Storage conformance suite's write-once checks run on it.
# Built from the Go module proxy into the cache outside the clone, reused when present.
#
# Usage: scripts/minio.sh <command>
#   install   go install MinIO into $CACHE/go-bin (idempotent)
#   start     a fresh server on free loopback ports, waits until live, prints
#             MINIO_ENDPOINT=..., MINIO_ACCESS_KEY=..., MINIO_SECRET_KEY=...
#   down      kills it, keeping its data, ports and credentials (an outage)
#   up        starts it again after `down`, on the same port
#   stop      stops it and removes its data
#
# Environment: UPLOAD_GATEWAY_CACHE (default ~/.cache/upload-gateway),
#              UPLOAD_GATEWAY_STATE (default /tmp/upload-gateway-services; MinIO in ./minio)
set -euo pipefail

MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c   # github.com/minio/minio, 2026-02-12
CACHE=${UPLOAD_GATEWAY_CACHE:-${HOME:-/root}/.cache/upload-gateway}
BIN="$CACHE/go-bin/minio"
MARKER="$CACHE/go-bin/.minio-$MINIO_VERSION"
STATE=${UPLOAD_GATEWAY_STATE:-/tmp/upload-gateway-services}/minio

log() { echo "minio.sh: $*" >&2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

install() {
  if [ -x "$BIN" ] && [ -f "$MARKER" ]; then return 0; fi
  log "installing MinIO $MINIO_VERSION into $CACHE/go-bin (go install, a few minutes cold)"
  mkdir -p "$CACHE/go-bin"
  GOBIN="$CACHE/go-bin" GOFLAGS=-mod=mod go install "github.com/minio/minio@$MINIO_VERSION" >&2
  touch "$MARKER"
}

# Runs the server on the ports and credentials in $STATE/settings and waits until it
# is live (at most 60 s).
launch() {
  # shellcheck disable=SC1091
  . "$STATE/settings"
  MINIO_ROOT_USER="$key" MINIO_ROOT_PASSWORD="$secret" MINIO_BROWSER=off MINIO_UPDATE=off \
    nohup "$BIN" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$console" "$STATE/data" \
    >>"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/pid"
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/minio/health/live" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "MinIO did not come up; its log:"; tail -20 "$STATE/server.log" >&2; exit 1
}

start() {
  install
  if [ -f "$STATE/env" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then cat "$STATE/env"; return 0; fi
  rm -rf "$STATE"; mkdir -p "$STATE/data"
  local port console key secret
  port=$(free_port); console=$(free_port)
  key="minio$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf 'port=%s\nconsole=%s\nkey=%s\nsecret=%s\n' "$port" "$console" "$key" "$secret" >"$STATE/settings"
  launch
  printf 'MINIO_ENDPOINT=http://127.0.0.1:%s\nMINIO_ACCESS_KEY=%s\nMINIO_SECRET_KEY=%s\n' "$port" "$key" "$secret" | tee "$STATE/env"
}

# An outage: the server killed, its data, ports and credentials kept.
down() {
  if [ -f "$STATE/pid" ]; then kill -9 "$(cat "$STATE/pid")" 2>/dev/null || true; fi
  for _ in $(seq 1 50); do kill -0 "$(cat "$STATE/pid" 2>/dev/null)" 2>/dev/null || return 0; sleep 0.1; done
}

# Back after `down`, on the same port.
up() {
  if kill -0 "$(cat "$STATE/pid" 2>/dev/null)" 2>/dev/null; then return 0; fi
  launch
}

stop() {
  if [ -f "$STATE/pid" ]; then kill "$(cat "$STATE/pid")" 2>/dev/null || true; fi
  rm -rf "$STATE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  down) down ;;
  up) up ;;
  stop) stop ;;
  *) echo "usage: $0 install|start|down|up|stop" >&2; exit 2 ;;
esac
