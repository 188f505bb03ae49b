#!/usr/bin/env bash
# Installs the tools the tests and benchmarks use into a cache outside the clone,
# reused when present:
#   scripts/tools.sh [grpcurl|all]   Go tools (grpcurl; ghz with `all`) into $CACHE/go-bin;
#                                    prints that folder
#   scripts/tools.sh python          a venv in $CACHE/py with the Prometheus project's
#                                    Python client (its OpenMetrics parser, used by
#                                    tests/support/parse_metrics.py); prints its python
#   scripts/tools.sh tus-js          tus-js-client from npm (the version and lock in
#                                    tests/support/tus-js), `npm ci` into $CACHE/tus-js;
#                                    prints that folder (node_modules is inside)
set -euo pipefail
CACHE=${UPLOAD_GATEWAY_CACHE:-${HOME:-/root}/.cache/upload-gateway}
BIN="$CACHE/go-bin"

PROMETHEUS_CLIENT_VERSION=0.26.0   # PyPI prometheus-client
PY="$CACHE/py"

install() { # name module@version
  local name=$1 module=$2
  if [ -x "$BIN/$name" ]; then return 0; fi
  echo "installing $name ($module) into $BIN" >&2
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module" >&2
}

python_venv() {
  local marker="$PY/.prometheus-client-$PROMETHEUS_CLIENT_VERSION"
  if [ -x "$PY/bin/python" ] && [ -f "$marker" ]; then echo "$PY/bin/python"; return 0; fi
  echo "installing prometheus-client $PROMETHEUS_CLIENT_VERSION into a venv in $PY" >&2
  rm -rf "$PY"
  python3 -m venv "$PY" >&2
  "$PY/bin/python" -m pip install --quiet --disable-pip-version-check \
    "prometheus-client==$PROMETHEUS_CLIENT_VERSION" >&2
  "$PY/bin/python" -c 'import prometheus_client.openmetrics.parser' >&2
  touch "$marker"
  echo "$PY/bin/python"
}

# tus-js-client for tests/it/tus.rs: installed from the committed lock, reinstalled
# when the lock changes.
tus_js() {
  local src dir="$CACHE/tus-js"
  src="$(cd "$(dirname "$0")/.." && pwd)/tests/support/tus-js"
  if [ -d "$dir/node_modules/tus-js-client" ] && cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
    echo "$dir"; return 0
  fi
  echo "installing tus-js-client (tests/support/tus-js/package-lock.json) into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$dir"
}

case "${1:-grpcurl}" in
  python) python_venv; exit 0 ;;
  tus-js) tus_js; exit 0 ;;
  grpcurl|all) ;;
  *) echo "usage: $0 [grpcurl|all|python|tus-js]" >&2; exit 2 ;;
esac

mkdir -p "$BIN"
install grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
if [ "${1:-grpcurl}" = all ]; then
  install ghz github.com/bojand/ghz/cmd/ghz@v0.121.0
fi
echo "$BIN"
