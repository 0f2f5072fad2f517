#!/usr/bin/env bash
# The single-node Apache Kafka broker (KRaft: broker and controller in one JVM)
# that distillwatch uses for development, the demo and CI.
#
#   infra/kafka.sh install   resolve the Kafka jars from Maven Central into .kafka/lib
#   infra/kafka.sh start     install if needed, format storage once, start, wait until ready
#   infra/kafka.sh stop      stop the broker (SIGTERM, then SIGKILL after 30 s)
#   infra/kafka.sh status    say whether it runs and answers
#   infra/kafka.sh logs      the tail of the broker log
#
# When KAFKA_BOOTSTRAP_SERVERS is set, that cluster is used and nothing is started.
# Everything this script writes lives under .kafka/ (ignored by git).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
home="${DISTILLWATCH_KAFKA_HOME:-$root/.kafka}"
port="${DISTILLWATCH_KAFKA_PORT:-9092}"
controller_port="${DISTILLWATCH_KAFKA_CONTROLLER_PORT:-9093}"
lib="$home/lib"
data="$home/data"
logs="$home/logs"
pidfile="$home/kafka.pid"
config="$home/server.properties"
ready_timeout="${DISTILLWATCH_KAFKA_READY_TIMEOUT:-120}"

log() { printf '[kafka] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

external() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then
    log "KAFKA_BOOTSTRAP_SERVERS is set: using that cluster, starting nothing"
    return 0
  fi
  return 1
}

install() {
  if [ -f "$lib/.complete" ]; then return 0; fi
  command -v mvn >/dev/null || die "Maven (mvn) is needed to fetch Kafka from Maven Central"
  command -v java >/dev/null || die "Java 17+ is needed to run Kafka"
  log "resolving Apache Kafka from Maven Central into $lib"
  rm -rf "$lib"
  mkdir -p "$lib"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime
  touch "$lib/.complete"
  log "installed $(ls "$lib"/*.jar | wc -l) jars"
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

write_config() {
  mkdir -p "$data" "$logs"
  cat >"$config" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
log.retention.hours=168
PROPS
  cat >"$home/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    RollingFile:
      name: server
      fileName: "${sys:kafka.logs.dir}/server.log"
      filePattern: "${sys:kafka.logs.dir}/server.log.%i"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
      SizeBasedTriggeringPolicy:
        size: 50MB
      DefaultRolloverStrategy:
        max: 2
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: server
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: INFO
YAML
}

classpath() { printf '%s' "$lib/*"; }

format_storage() {
  if [ -f "$data/meta.properties" ]; then return 0; fi
  log "formatting KRaft storage in $data"
  java -cp "$(classpath)" -Dlog4j2.configurationFile="$home/log4j2.yaml" -Dkafka.logs.dir="$logs" \
    kafka.tools.StorageTool format --cluster-id="$(cat "$home/cluster.id" 2>/dev/null || uuid_b64)" \
    -c "$config" >"$logs/format.log" 2>&1 || { cat "$logs/format.log" >&2; die "storage format failed"; }
}

uuid_b64() {
  # A Kafka cluster id is a base64url-encoded 16-byte UUID without padding. One in 64
  # starts with "-", which is why format_storage passes it as --cluster-id=<id>: given as
  # a separate argument, the tool's parser takes it for an option and refuses to format.
  local id
  id="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
  printf '%s' "$id" >"$home/cluster.id"
  printf '%s' "$id"
}

answers() {
  # The broker answers a metadata request: the same check a client makes first.
  python3 - "$port" <<'PY' 2>/dev/null
import socket, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
except OSError:
    sys.exit(1)
client = b"distillwatch-infra"
# Metadata request v1 with a null topic list (all topics).
body = struct.pack(">hhih", 3, 1, 7, len(client)) + client + struct.pack(">i", -1)
s.sendall(struct.pack(">i", len(body)) + body)
s.settimeout(5)
try:
    head = s.recv(4)
    if len(head) < 4:
        sys.exit(1)
    size = struct.unpack(">i", head)[0]
    got = b""
    while len(got) < size:
        chunk = s.recv(size - len(got))
        if not chunk:
            sys.exit(1)
        got += chunk
    corr, nbrokers = struct.unpack(">ii", got[:8])
    sys.exit(0 if corr == 7 and nbrokers >= 1 else 1)
except OSError:
    sys.exit(1)
PY
}

start() {
  external && return 0
  if running; then log "already running (pid $(cat "$pidfile")) on 127.0.0.1:$port"; return 0; fi
  install
  write_config
  format_storage
  log "starting broker on 127.0.0.1:$port (logs: $logs)"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$home/log4j2.yaml" -Dkafka.logs.dir="$logs" \
    -cp "$(classpath)" kafka.Kafka "$config" >"$logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  local waited=0
  until answers; do
    if ! running; then tail -n 40 "$logs/stdout.log" >&2 || true; die "broker exited during start-up"; fi
    if [ "$waited" -ge "$ready_timeout" ]; then die "broker did not answer within ${ready_timeout}s"; fi
    sleep 1; waited=$((waited + 1))
  done
  log "ready after ${waited}s (pid $(cat "$pidfile"))"
}

stop() {
  external && return 0
  if ! running; then log "not running"; rm -f "$pidfile"; return 0; fi
  local pid; pid="$(cat "$pidfile")"
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }
    sleep 1
  done
  log "still up after 30s: killing"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

status() {
  if [ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then log "external cluster: KAFKA_BOOTSTRAP_SERVERS is set"; return 0; fi
  if running && answers; then log "running (pid $(cat "$pidfile")) and answering on 127.0.0.1:$port"; return 0; fi
  if running; then log "process up (pid $(cat "$pidfile")) but not answering"; return 1; fi
  log "not running"; return 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  logs) tail -n "${2:-100}" "$logs/server.log" ;;
  reset) stop; rm -rf "$data" "$home/cluster.id"; log "storage removed" ;;
  *) echo "usage: $0 {install|start|stop|restart|status|logs|reset}" >&2; exit 2 ;;
esac
