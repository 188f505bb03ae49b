#!/usr/bin/env bash
# Install and run a single-node Garage (S3-compatible) server for integration tests.
#
# Usage: scripts/garage.sh <install|start|down|up|stop|status|env|bucket|key|deny>
#
#   install  build garage with `cargo install` into $CACHE/garage-$GARAGE_VERSION (cached)
#   start    install if needed, write config (first time), start server, wait until
#            healthy, write $STATE/garage/env and print it. No-op if already running.
#            If a config from a previous `start` exists (e.g. after `down`), it is reused.
#   down     kill the server but keep data, config and ports (simulates an S3 outage)
#   up       start the server again with the same config and wait until healthy
#   stop     kill the server and remove all state (idempotent)
#   status   exit 0 if the server is running and healthy
#   env      print the env file of a running setup
#   bucket NAME...
#            create buckets every key can be allowed on (global aliases; a bucket made
#            with S3 CreateBucket is named for its creator's key only), owned by the
#            default key
#   key NAME BUCKET=PERMS...
#            make an access key NAME with no right to create buckets, allowed PERMS
#            (r, w or rw) on each BUCKET made by `bucket`; print AWS_ACCESS_KEY_ID= and
#            AWS_SECRET_ACCESS_KEY= lines (least-privilege tests)
#   deny KEY_ID BUCKET=PERMS...
#            take those permissions away from a key again
#
# Environment:
#   UPLOAD_GATEWAY_CACHE   install cache (default: $HOME/.cache/upload-gateway)
#   UPLOAD_GATEWAY_STATE   state root (default: /tmp/upload-gateway-services); garage uses ./garage
#   GARAGE_S3_PORT, GARAGE_RPC_PORT, GARAGE_ADMIN_PORT   fixed ports (default: free ports)
#   GARAGE_BUCKET          default bucket created at start (default: upload-default)
#   GARAGE_START_TIMEOUT   seconds to wait for health (default: 60)
#   GARAGE_RUST_LOG        log filter for the server (default: garage=info)
#
# The default access key (GARAGE_DEFAULT_ACCESS_KEY) is created by `--default-bucket`
# with the "create bucket" permission, so S3 CreateBucket works with it.
set -euo pipefail

GARAGE_VERSION=2.5.0
CACHE=${UPLOAD_GATEWAY_CACHE:-$HOME/.cache/upload-gateway}
INSTALL_ROOT="$CACHE/garage-$GARAGE_VERSION"
GARAGE_BIN="$INSTALL_ROOT/bin/garage"
STATE_ROOT=${UPLOAD_GATEWAY_STATE:-/tmp/upload-gateway-services}
DIR="$STATE_ROOT/garage"
CONFIG="$DIR/garage.toml"
SETTINGS="$DIR/settings.sh" # ports + credentials, sourced by `up`
PIDFILE="$DIR/garage.pid"
LOGFILE="$DIR/garage.log"
ENVFILE="$DIR/env"
START_TIMEOUT=${GARAGE_START_TIMEOUT:-60}

log() { echo "garage.sh: $*" >&2; }
die() {
	log "error: $*"
	exit 1
}

hex() { # hex <nbytes>
	od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

# ---------------------------------------------------------------- install

ensure_build_deps() {
	# garage's default features bundle sqlite/lmdb/libsodium/zstd from source:
	# needs a C compiler, make and pkg-config. No -dev library packages needed.
	local missing=()
	command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
	command -v make >/dev/null 2>&1 || missing+=(make)
	command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
	if ((${#missing[@]})); then
		command -v apt-get >/dev/null 2>&1 || die "missing build tools (${missing[*]}) and no apt-get"
		local sudo=()
		[[ $(id -u) -eq 0 ]] || sudo=(sudo)
		log "installing build dependencies: ${missing[*]}"
		"${sudo[@]}" apt-get update -q
		DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
	fi
}

garage_installed() {
	[[ -x $GARAGE_BIN ]] && "$GARAGE_BIN" --version >/dev/null 2>&1
}

cmd_install() {
	if garage_installed; then
		return 0
	fi
	mkdir -p "$INSTALL_ROOT"
	if command -v flock >/dev/null 2>&1; then
		exec 8>"$CACHE/.garage-$GARAGE_VERSION.lock"
		flock 8
		if garage_installed; then # built by a concurrent invocation
			exec 8>&-
			return 0
		fi
	fi
	command -v cargo >/dev/null 2>&1 || die "cargo not found"
	ensure_build_deps
	log "building garage $GARAGE_VERSION into $INSTALL_ROOT (takes ~10+ minutes)..."
	local jobs=()
	[[ -n ${GARAGE_BUILD_JOBS:-} ]] && jobs=(-j "$GARAGE_BUILD_JOBS")
	cargo install "${jobs[@]}" --locked --root "$INSTALL_ROOT" "garage@$GARAGE_VERSION"
	garage_installed || die "garage binary at $GARAGE_BIN does not run"
	exec 8>&-
}

# ---------------------------------------------------------------- helpers

read_pid() {
	[[ -f $PIDFILE ]] && cat "$PIDFILE" 2>/dev/null || true
}

is_running() {
	local pid
	pid=$(read_pid)
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

load_settings() {
	[[ -f $SETTINGS ]] || die "no garage config in $DIR (run '$0 start' first)"
	# shellcheck source=/dev/null
	source "$SETTINGS"
}

is_healthy() {
	[[ -n ${ADMIN_PORT:-} ]] || return 1
	curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$ADMIN_PORT/health" 2>/dev/null
}

s3_answers() {
	local code
	code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$S3_PORT/" 2>/dev/null || true)
	[[ -n $code && $code != 000 ]]
}

port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Print three distinct free TCP ports on 127.0.0.1.
free_ports() {
	if command -v python3 >/dev/null 2>&1; then
		python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
	else
		local ports=() p
		while ((${#ports[@]} < 3)); do
			p=$((20000 + RANDOM % 30000))
			[[ " ${ports[*]} " == *" $p "* ]] && continue
			port_in_use "$p" || ports+=("$p")
		done
		echo "${ports[*]}"
	fi
}

write_config() {
	mkdir -p "$DIR/meta" "$DIR/data"
	local ports
	read -r -a ports <<<"$(free_ports)"
	S3_PORT=${GARAGE_S3_PORT:-${ports[0]}}
	RPC_PORT=${GARAGE_RPC_PORT:-${ports[1]}}
	ADMIN_PORT=${GARAGE_ADMIN_PORT:-${ports[2]}}
	ACCESS_KEY="GK$(hex 12)"
	SECRET_KEY=$(hex 32)
	BUCKET=${GARAGE_BUCKET:-upload-default}
	local rpc_secret admin_token metrics_token
	rpc_secret=$(hex 32)
	admin_token=$(hex 32)
	metrics_token=$(hex 32)

	(
		umask 077
		cat >"$CONFIG" <<EOF
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false

replication_factor = 1

rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$rpc_secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$S3_PORT"
root_domain = ".s3.localhost"

[admin]
api_bind_addr = "127.0.0.1:$ADMIN_PORT"
admin_token = "$admin_token"
metrics_token = "$metrics_token"
EOF
		cat >"$SETTINGS" <<EOF
S3_PORT=$S3_PORT
RPC_PORT=$RPC_PORT
ADMIN_PORT=$ADMIN_PORT
ACCESS_KEY=$ACCESS_KEY
SECRET_KEY=$SECRET_KEY
BUCKET=$BUCKET
ADMIN_TOKEN=$admin_token
EOF
	)
}

write_env() {
	cat >"$ENVFILE" <<EOF
S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_REGION=us-east-1
GARAGE_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
GARAGE_ADMIN_TOKEN=$ADMIN_TOKEN
GARAGE_DEFAULT_BUCKET=$BUCKET
EOF
	cat "$ENVFILE"
}

# Launch the server (settings must be loaded) and wait until healthy.
launch() {
	local p
	for p in "$S3_PORT" "$RPC_PORT" "$ADMIN_PORT"; do
		port_in_use "$p" && die "port $p is already in use (stale setup? run '$0 stop' then '$0 start')"
	done
	echo "---- $(date -u +%FT%TZ) starting garage" >>"$LOGFILE"
	# setsid: detach from the caller's process group; stdio to the log so the caller's
	# pipes are not held open. The inner shell writes its pid, then execs garage.
	GARAGE_DEFAULT_ACCESS_KEY="$ACCESS_KEY" \
		GARAGE_DEFAULT_SECRET_KEY="$SECRET_KEY" \
		GARAGE_DEFAULT_BUCKET="$BUCKET" \
		RUST_LOG="${GARAGE_RUST_LOG:-garage=info}" NO_COLOR=1 \
		setsid bash -c 'echo $$ >"$1.tmp" && mv -f "$1.tmp" "$1"; shift; exec "$@"' _ "$PIDFILE" \
		"$GARAGE_BIN" -c "$CONFIG" server --single-node --default-bucket \
		</dev/null >>"$LOGFILE" 2>&1 8>&- 9>&- &

	local deadline=$((SECONDS + START_TIMEOUT))
	while :; do
		if is_running && is_healthy && s3_answers; then
			return 0
		fi
		if [[ -f $PIDFILE ]] && ! is_running; then
			log "garage exited during start-up; log tail:"
			tail -n 40 "$LOGFILE" >&2
			rm -f "$PIDFILE"
			exit 1
		fi
		if ((SECONDS >= deadline)); then
			log "garage not healthy after ${START_TIMEOUT}s; log tail:"
			tail -n 40 "$LOGFILE" >&2
			kill_server
			exit 1
		fi
		sleep 0.2
	done
}

kill_server() {
	local pid i
	pid=$(read_pid)
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 50; i++)); do
				kill -0 "$pid" 2>/dev/null || break
				sleep 0.1
			done
		fi
	fi
	rm -f "$PIDFILE"
}

# ---------------------------------------------------------------- commands

cmd_start() {
	cmd_install
	mkdir -p "$DIR"
	if [[ -f $SETTINGS ]]; then
		load_settings
		if is_running && is_healthy; then
			write_env
			return 0
		fi
		kill_server # stale or unhealthy process
	else
		write_config
		load_settings
	fi
	launch
	write_env
}

cmd_up() {
	load_settings
	if is_running && is_healthy; then
		return 0
	fi
	kill_server
	garage_installed || cmd_install
	launch
}

cmd_down() {
	[[ -d $DIR ]] || return 0
	kill_server
}

cmd_stop() {
	[[ -d $DIR ]] || return 0
	kill_server
	rm -rf "$DIR"
}

cmd_status() {
	[[ -f $SETTINGS ]] || return 1
	load_settings
	is_running && is_healthy
}

# The garage CLI against the running server (it reads the RPC secret from the config).
garage_cli() {
	"$GARAGE_BIN" -c "$CONFIG" "$@"
}

perm_flags() { # perm_flags <r|w|rw>
	case $1 in
	r) echo --read ;;
	w) echo --write ;;
	rw | wr) echo --read --write ;;
	*) die "permissions must be r, w or rw, not '$1'" ;;
	esac
}

# grant <allow|deny> <key id> BUCKET=PERMS...
grant() {
	local verb=$1 id=$2 g
	shift 2
	for g in "$@"; do
		[[ $g == *=* ]] || die "expected BUCKET=PERMS, got '$g'"
		# shellcheck disable=SC2046 # the flags are words
		garage_cli bucket "$verb" $(perm_flags "${g##*=}") --key "$id" "${g%=*}" >/dev/null
	done
}

cmd_bucket() {
	local b
	load_settings
	is_running || die "garage is not running (run '$0 start')"
	for b in "$@"; do
		garage_cli bucket create "$b" >/dev/null
		garage_cli bucket allow --read --write --owner --key "$ACCESS_KEY" "$b" >/dev/null
	done
}

cmd_key() {
	[[ $# -ge 1 ]] || die "usage: $0 key NAME BUCKET=PERMS..."
	local name=$1 id secret
	shift
	load_settings
	is_running || die "garage is not running (run '$0 start')"
	id="GK$(hex 12)"
	secret=$(hex 32)
	garage_cli key import --yes -n "$name" "$id" "$secret" >/dev/null
	grant allow "$id" "$@"
	printf 'AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n' "$id" "$secret"
}

cmd_deny() {
	[[ $# -ge 2 ]] || die "usage: $0 deny KEY_ID BUCKET=PERMS..."
	load_settings
	grant deny "$@"
}

cmd_env() {
	[[ -f $ENVFILE ]] || die "no env file at $ENVFILE (run '$0 start')"
	cat "$ENVFILE"
}

# Serialize concurrent invocations (e.g. parallel test processes). fd 9 is closed
# for the server process so it does not hold the lock.
lock() {
	command -v flock >/dev/null 2>&1 || return 0
	mkdir -p "$STATE_ROOT"
	exec 9>"$STATE_ROOT/.garage.lock"
	flock 9
}

case "${1:-}" in
install) cmd_install ;;
start) lock && cmd_start ;;
up) lock && cmd_up ;;
down) lock && cmd_down ;;
stop) lock && cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
bucket) shift && cmd_bucket "$@" ;;
key) shift && cmd_key "$@" ;;
deny) shift && cmd_deny "$@" ;;
*)
	echo "usage: $0 {install|start|down|up|stop|status|env|bucket|key|deny}" >&2
	exit 2
	;;
esac
