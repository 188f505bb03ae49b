#!/usr/bin/env bash
# Jaeger (v2, the OpenTelemetry Collector-based backend) for the tracing tests: an OTLP
# receiver (gRPC and HTTP) storing in memory, and the query API (`GET /api/traces/<id>`).
# Built from the Go module proxy into the cache outside the clone, reused when present.
# `go install` refuses jaeger's module (it has replace directives), so it is built from
# a module of its own that requires it as a tool.
#
# Usage: scripts/jaeger.sh <command>
#   install   build Jaeger into $CACHE/go-bin (idempotent; ~5.5 minutes cold on 2 cores)
#   start     a fresh server on free loopback ports (no fixed port: not 4317, 16686, ...),
#             waits until it answers, prints JAEGER_OTLP_GRPC=http://..., JAEGER_OTLP_HTTP=...,
#             JAEGER_QUERY=... (no-op but the print when one is running)
#   stop      stops it and removes its state
#   status    prints the running one's JAEGER_* lines, or exits 1
#
# Environment: UPLOAD_GATEWAY_CACHE (default ~/.cache/upload-gateway),
#              UPLOAD_GATEWAY_STATE (default /tmp/upload-gateway-services; Jaeger in ./jaeger)
set -euo pipefail

JAEGER_VERSION=v1.76.0   # github.com/jaegertracing/jaeger (cmd/jaeger is Jaeger v2)
CACHE=${UPLOAD_GATEWAY_CACHE:-${HOME:-/root}/.cache/upload-gateway}
BIN="$CACHE/go-bin/jaeger"
MARKER="$CACHE/go-bin/.jaeger-$JAEGER_VERSION"
STATE=${UPLOAD_GATEWAY_STATE:-/tmp/upload-gateway-services}/jaeger

log() { echo "jaeger.sh: $*" >&2; }

free_ports() { # free_ports <n>
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# The binary in the cache is this version (go records the main module's version).
built_here() {
  [ -x "$BIN" ] && go version -m "$BIN" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+github.com/jaegertracing/jaeger[[:space:]]+$JAEGER_VERSION[[:space:]]"
}

install() {
  if [ -x "$BIN" ] && [ -f "$MARKER" ]; then return 0; fi
  mkdir -p "$CACHE/go-bin"
  exec 7>"$CACHE/.jaeger-$JAEGER_VERSION.lock"
  flock 7
  if [ -x "$BIN" ] && [ -f "$MARKER" ]; then exec 7>&-; return 0; fi   # built by a concurrent run
  if built_here; then touch "$MARKER"; exec 7>&-; return 0; fi
  log "building Jaeger $JAEGER_VERSION into $CACHE/go-bin (go build, ~5.5 minutes cold)"
  local mod
  mod=$(mktemp -d "${TMPDIR:-/tmp}/jaeger-mod.XXXXXX")
  (
    cd "$mod"
    go mod init jaegertool >&2
    GOFLAGS=-mod=mod go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2
    go build -o "$BIN.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  )
  rm -rf "$mod"
  mv -f "$BIN.tmp" "$BIN"
  touch "$MARKER"
  exec 7>&-
}

# The env of a running instance, if there is one.
running() {
  [ -f "$STATE/env" ] && [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null
}

start() {
  install
  if running; then cat "$STATE/env"; return 0; fi
  stop
  mkdir -p "$STATE"
  local grpc http query query_grpc
  read -r grpc http query query_grpc <<<"$(free_ports 4)"
  # Only what the tests need, every port chosen here: OTLP in, memory storage, the
  # query API; no internal metrics endpoint, no sampling or health extensions, no
  # traces of its own.
  cat >"$STATE/config.yaml" <<YAML
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: warn

extensions:
  jaeger_query:
    storage:
      traces: memstore
    # On by default in v2: the query service's own traces, sent to the OTLP default
    # (localhost:4317), where the tests check that nothing connects.
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$query
    grpc:
      endpoint: 127.0.0.1:$query_grpc
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$grpc
      http:
        endpoint: 127.0.0.1:$http

processors:
  batch:
    timeout: 100ms

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
YAML
  # setsid: its own process group, stdio to the log, so the caller's pipes are not held.
  setsid "$BIN" --config "file:$STATE/config.yaml" </dev/null >"$STATE/server.log" 2>&1 7>&- &
  echo $! >"$STATE/pid"
  local i
  for i in $(seq 1 240); do
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      log "Jaeger exited while starting; its log:"; tail -30 "$STATE/server.log" >&2; exit 1
    fi
    # Ready: the query API answers, and both OTLP receivers take connections.
    if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$query/api/services" 2>/dev/null \
      && (exec 3<>"/dev/tcp/127.0.0.1/$grpc") 2>/dev/null \
      && (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null; then
      printf 'JAEGER_OTLP_GRPC=http://127.0.0.1:%s\nJAEGER_OTLP_HTTP=http://127.0.0.1:%s\nJAEGER_QUERY=http://127.0.0.1:%s\n' \
        "$grpc" "$http" "$query" | tee "$STATE/env"
      return 0
    fi
    sleep 0.25
  done
  log "Jaeger did not come up within 60 s; its log:"; tail -30 "$STATE/server.log" >&2
  stop; exit 1
}

stop() {
  if [ -f "$STATE/pid" ]; then
    local pid i
    pid=$(cat "$STATE/pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then cat "$STATE/env"; else echo "jaeger.sh: not running" >&2; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
