#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, combined broker+controller) for integration tests.
# The broker is assembled from Maven Central via scripts/kafka/pom.xml; no tarball download.
#
# Usage: scripts/kafka.sh <command>
#   install        resolve the Kafka jars into $CACHE/kafka-<version>/lib (idempotent)
#   start          fresh broker (wipes old state), waits until ready, prints KAFKA_BROKERS=...
#                  (no-op that just prints the line when it is already running)
#   stop           stop the broker (TERM, then KILL after 15 s) and remove its state
#   down [--kill]  stop only the broker process, keep data, config and port (outage simulation)
#   up             start the broker again after `down` with the same port/data, wait until ready
#   pause          SIGSTOP the broker: connections stay open, requests go unanswered
#   resume         SIGCONT it: it answers what it was sent meanwhile
#   status         exit 0 when the broker runs and answers a metadata request
#   env            print KAFKA_BROKERS=... of the running broker
#
# Environment:
#   UPLOAD_GATEWAY_CACHE   jar cache          (default: $HOME/.cache/upload-gateway)
#   UPLOAD_GATEWAY_STATE   state/runtime dir  (default: /tmp/upload-gateway-services); broker in ./kafka
#   KAFKA_PORT             client port        (default: a free port on 127.0.0.1)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default: a free port)
#   KAFKA_READY_TIMEOUT    seconds to wait for readiness (default: 90)
#   KAFKA_HEAP_OPTS        JVM heap flags     (default: -Xms128m -Xmx512m)
set -euo pipefail

KAFKA_VERSION=4.4.0   # keep in sync with scripts/kafka/pom.xml

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/kafka/pom.xml"
READY_SRC="$SCRIPT_DIR/kafka/KafkaReady.java"

CACHE=${UPLOAD_GATEWAY_CACHE:-${HOME:-/root}/.cache/upload-gateway}
STATE_ROOT=${UPLOAD_GATEWAY_STATE:-/tmp/upload-gateway-services}
HOME_DIR="$CACHE/kafka-$KAFKA_VERSION"
LIB="$HOME_DIR/lib"
MARKER="$HOME_DIR/.installed"
STATE="$STATE_ROOT/kafka"
PID_FILE="$STATE/kafka.pid"
LOG_FILE="$STATE/broker.log"
CONFIG="$STATE/server.properties"
LOG4J_CONFIG="$STATE/log4j2.properties"
TOOLS_LOG4J_CONFIG="$STATE/tools-log4j2.properties"
ENV_FILE="$STATE/env"
PORT_FILE="$STATE/port"
CLUSTER_ID_FILE="$STATE/cluster.id"
LOCK_FILE="$STATE_ROOT/.kafka.lock"
READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-90}

log() { echo "kafka.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH"; }

# Serialise commands that change state (parallel test runners may call start).
with_lock() {
    mkdir -p "$STATE_ROOT"
    exec 9>"$LOCK_FILE"
    flock -w 180 9 || die "could not get lock $LOCK_FILE"
}

install_marker_value() {
    # Reinstall when the pom or the version changes.
    echo "$KAFKA_VERSION $(sha256sum "$POM" | cut -d' ' -f1)"
}

cmd_install() {
    if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$(install_marker_value)" && -d "$LIB" ]]; then
        return 0
    fi
    need mvn
    need java
    mkdir -p "$HOME_DIR"
    local tmp="$HOME_DIR/lib.tmp.$$"
    rm -rf "$tmp"
    log "installing Apache Kafka $KAFKA_VERSION jars from Maven Central into $LIB"
    local out
    if ! out=$(mvn -B -q -f "$POM" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1); then
        echo "$out" >&2
        rm -rf "$tmp"
        die "mvn dependency:copy-dependencies failed"
    fi
    [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" ]] || { rm -rf "$tmp"; die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"; }
    rm -rf "$LIB" "$HOME_DIR/ready"
    mv "$tmp" "$LIB"
    install_marker_value >"$MARKER"
    log "installed $(find "$LIB" -name "*.jar" | wc -l) jars"
}

# Compile the readiness helper once per source version.
ready_classes() {
    local sum dir
    sum=$(sha256sum "$READY_SRC" | cut -c1-16)
    dir="$HOME_DIR/ready/$sum"
    if [[ ! -f "$dir/KafkaReady.class" ]]; then
        need javac
        rm -rf "$dir.tmp.$$"
        mkdir -p "$dir.tmp.$$"
        javac -nowarn -d "$dir.tmp.$$" -cp "$LIB/*" "$READY_SRC" >&2
        rm -rf "$dir"
        mv "$dir.tmp.$$" "$dir"
    fi
    echo "$dir"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

check_ports_free() {
    local p
    for p in "$@"; do
        if port_in_use "$p"; then die "port 127.0.0.1:$p is already in use"; fi
    done
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
        return
    fi
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 30000 ))
        if ! port_in_use "$p"; then echo "$p"; return; fi
    done
    die "no free port found"
}

# True while the process exists and is not a zombie (an orphaned broker is
# reparented to init, which may reap it only after a while).
alive() {
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1) || return 1
    [[ -n "$st" && "$st" != Z ]]
}

broker_pid() {
    # Prints the pid if our broker process is alive (guards against recycled pids).
    [[ -f "$PID_FILE" ]] || return 1
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $CONFIG" || return 1
    echo "$pid"
}

java_opts() {
    # shellcheck disable=SC2206
    local heap=(${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m})
    printf '%s\n' "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$LOG4J_CONFIG" \
        -Dkafka.logs.dir="$STATE/logs"
}

write_config() {
    local port=$1 cport=$2
    mkdir -p "$STATE/data" "$STATE/logs"
    cat >"$CONFIG" <<EOF
# generated by scripts/kafka.sh — single node, combined broker+controller (KRaft)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$STATE/data

# test-friendly settings
auto.create.topics.enable=true
delete.topic.enable=true
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.leader.rebalance.enable=false
# After "down --kill" the restarted controller refuses the broker's new registration
# until the old session expires (default 9 s); keep that short so "up" is fast.
broker.session.timeout.ms=4000
broker.heartbeat.interval.ms=500

# small machine
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
background.threads=2
log.cleaner.threads=1
log.segment.bytes=67108864
EOF
    cat >"$LOG4J_CONFIG" <<'EOF'
status = error
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.raftserver.name = kafka.server.KafkaRaftServer
logger.raftserver.level = INFO
logger.kafka.name = kafka.Kafka$
logger.kafka.level = INFO
EOF
    cat >"$TOOLS_LOG4J_CONFIG" <<'EOF'
status = error
appender.console.type = Console
appender.console.name = STDERR
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ERROR
rootLogger.appenderRef.stderr.ref = STDERR
EOF
    echo "$port" >"$PORT_FILE"
}

format_storage() {
    local cluster_id out
    # Kafka cluster ids are 16 random bytes, URL-safe base64 without padding. Like Kafka's
    # own Uuid.randomUuid(), draw again when the id starts with '-': the tool's argument
    # parser would take it for an option (one id in 64 did, and failed a CI run).
    cluster_id=-
    while [[ $cluster_id == -* ]]; do
        cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
    done
    echo "$cluster_id" >"$CLUSTER_ID_FILE"
    if ! out=$(java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONFIG" \
            -cp "$LIB/*" kafka.tools.StorageTool format --cluster-id="$cluster_id" --config="$CONFIG" 2>&1); then
        echo "$out" >&2
        die "formatting storage failed"
    fi
}

launch_broker() {
    local opts
    mapfile -t opts < <(java_opts)
    {
        echo
        echo "===== kafka.sh: starting broker $(date -u +%Y-%m-%dT%H:%M:%SZ) ====="
    } >>"$LOG_FILE"
    rm -f "$PID_FILE"
    # The inner shell records its own pid and then becomes java (exec), so the pid
    # file names the JVM. setsid detaches it from the caller's process group;
    # fd 9 (the lock) is closed so the broker does not hold it.
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$PID_FILE" \
        java "${opts[@]}" -cp "$LIB/*" kafka.Kafka "$CONFIG" \
        </dev/null >>"$LOG_FILE" 2>&1 9>&- &
    for _ in $(seq 1 50); do
        [[ -s "$PID_FILE" ]] && break
        sleep 0.1
    done
    [[ -s "$PID_FILE" ]] || die "broker did not start (no pid file)"
}

broker_addr() { echo "127.0.0.1:$(cat "$PORT_FILE")"; }

wait_ready() {
    local timeout=$1 pid classes rc=0
    pid=$(cat "$PID_FILE")
    classes=$(ready_classes)
    java -Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J_CONFIG" \
        -cp "$LIB/*:$classes" KafkaReady "$(broker_addr)" "$timeout" "$pid" \
        "$(cat "$CLUSTER_ID_FILE" 2>/dev/null || true)" || rc=$?
    if [[ $rc -ne 0 ]]; then
        case $rc in
            2) log "broker process $pid exited before it was ready" ;;
            3) log "another Kafka cluster answers on $(broker_addr)" ;;
            *) log "broker at $(broker_addr) not ready after ${timeout}s (probe exit $rc)" ;;
        esac
        log "last lines of $LOG_FILE:"
        tail -n 40 "$LOG_FILE" >&2 || true
        return 1
    fi
}

write_env() {
    echo "KAFKA_BROKERS=$(broker_addr)" >"$ENV_FILE"
    cat "$ENV_FILE"
}

# Stop the broker process; keep state. $1 = seconds to wait after TERM (0 => KILL at once).
kill_broker() {
    local grace=$1 pid
    pid=$(broker_pid) || { rm -f "$PID_FILE"; return 0; }
    if [[ "$grace" -gt 0 ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((grace * 10))); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    if alive "$pid"; then
        [[ "$grace" -gt 0 ]] && log "broker $pid did not exit after ${grace}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$PID_FILE"
}

cmd_start() {
    cmd_install
    with_lock
    if broker_pid >/dev/null && [[ -f "$ENV_FILE" ]]; then
        log "already running"
        cat "$ENV_FILE"
        return 0
    fi
    kill_broker 15
    rm -rf "$STATE"
    mkdir -p "$STATE"
    local port=${KAFKA_PORT:-} cport=${KAFKA_CONTROLLER_PORT:-}
    [[ -n "$port" ]] || port=$(free_port)
    if [[ -z "$cport" ]]; then
        cport=$(free_port)
        while [[ "$cport" == "$port" ]]; do cport=$(free_port); done
    fi
    check_ports_free "$port" "$cport"
    write_config "$port" "$cport"
    format_storage
    launch_broker
    wait_ready "$READY_TIMEOUT" || { kill_broker 5; die "kafka did not become ready (state kept in $STATE)"; }
    write_env
}

cmd_stop() {
    with_lock
    kill_broker 15
    rm -rf "$STATE"
}

cmd_down() {
    with_lock
    [[ -f "$CONFIG" ]] || die "no broker state in $STATE (run start first)"
    if [[ "${1:-}" == "--kill" ]]; then kill_broker 0; else kill_broker 15; fi
}

cmd_up() {
    cmd_install
    with_lock
    [[ -f "$CONFIG" ]] || die "no broker state in $STATE (run start first)"
    if ! broker_pid >/dev/null; then
        check_ports_free "$(cat "$PORT_FILE")" "$(sed -n 's/^controller.quorum.voters=1@127.0.0.1://p' "$CONFIG")"
        launch_broker
        wait_ready "$READY_TIMEOUT" || { kill_broker 5; die "kafka did not become ready after up"; }
    fi
    write_env
}

cmd_signal() {
    local pid
    pid=$(broker_pid) || die "the broker is not running"
    kill "-$1" "$pid"
}

cmd_status() {
    local pid
    pid=$(broker_pid) || { log "not running"; return 1; }
    [[ -f "$PORT_FILE" ]] || { log "no port file"; return 1; }
    [[ -f "$MARKER" ]] || { log "not installed"; return 1; }
    wait_ready "${KAFKA_STATUS_TIMEOUT:-10}" >/dev/null 2>&1 || { log "pid $pid not answering on $(broker_addr)"; return 1; }
    log "running (pid $pid) at $(broker_addr)"
}

cmd_env() {
    [[ -f "$ENV_FILE" ]] || die "no env file (broker not started)"
    cat "$ENV_FILE"
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        down) cmd_down "$@" ;;
        up) cmd_up ;;
        pause) cmd_signal STOP ;;
        resume) cmd_signal CONT ;;
        status) cmd_status ;;
        env) cmd_env ;;
        *)
            sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
            exit 64
            ;;
    esac
}

main "$@"
