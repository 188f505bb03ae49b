#!/usr/bin/env bash
# Installs the Go tools the tests and benchmarks use (grpcurl; ghz with `all`) into a
# cache outside the clone, reused when present, and prints the folder they are in.
#   scripts/tools.sh [grpcurl|all]
set -euo pipefail
CACHE=${UPLOAD_GATEWAY_CACHE:-${HOME:-/root}/.cache/upload-gateway}
BIN="$CACHE/go-bin"
mkdir -p "$BIN"

install() { # name module@version
  local name=$1 module=$2
  if [ -x "$BIN/$name" ]; then return 0; fi
  echo "installing $name ($module) into $BIN" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module" >&2
}

install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
if [ "${1:-grpcurl}" = all ]; then
  install ghz github.com/bojand/ghz/cmd/ghz@v0.121.0
fi
echo "$BIN"
