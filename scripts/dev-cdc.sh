# Sourced by scripts/dev-services: change data capture, `up --cdc` (docs/cdc.md).
#
# Like --secure, the mode sticks (.dev/connect/enabled) until `purge`, so a later plain `up`
# (the test fixtures) keeps Connect running. What it adds:
#   - PostgreSQL with wal_level=logical (ALTER SYSTEM, then one restart when it changes);
#   - the database `directory` (a directory service's, not ours) with the sample membership
#     table public.memberships, owned by postgres, and the publication `cleanup_cdc` for it;
#   - a replication login `directory_cdc` with only what Debezium documents: LOGIN,
#     REPLICATION, CONNECT on the database, USAGE on the schema, SELECT on the table (the
#     publication is the owner's; the connector never creates one: autocreate disabled);
#   - Kafka Connect 4.3.2, a standalone worker (offsets in .dev/connect/offsets), from the
#     jars connect/pom.xml resolves, with the Debezium PostgreSQL connector
#     (connect/debezium-pom.xml) on plugin.path, REST on 127.0.0.1:18083
#     (CLEANUP_DEV_CONNECT_PORT);
#   - two connectors of the table, registered through the REST API: `directory` writes
#     JSON without schemas to directory.public.memberships, `directory-schemas` JSON with
#     schemas to directory_schemas.public.memberships (topics created here: the dev broker
#     does not create topics on demand);
#   - .dev/cdc.env: CLEANUP_CDC_* for the table, CDC_SOURCE_DATABASE_URL, CDC_SOURCE_TABLE.

CDC_DIR="$DEV/connect"
CDC_MARK="$CDC_DIR/enabled"
CONNECT_PORT="${CLEANUP_DEV_CONNECT_PORT:-18083}"
CONNECT_URL="http://$HOST:$CONNECT_PORT"
CONNECT_LIB="$CDC_DIR/lib"
CONNECT_PLUGINS="$CDC_DIR/plugins"
CONNECT_CONF="$CDC_DIR/worker.properties"
CONNECT_LOG4J="$CDC_DIR/log4j2.properties"
CONNECT_PIDFILE="$DEV/connect.pid"
CONNECT_OUT="$LOGDIR/connect.out"
CONNECT_START_TIMEOUT="${CLEANUP_DEV_CONNECT_START_TIMEOUT:-120}"
CDC_DB=directory
CDC_TABLE=public.memberships
CDC_LOGIN=directory_cdc
CDC_PASSWORD=directory-cdc-dev   # dev only; the server trusts 127.0.0.1 anyway
CDC_PUBLICATION=cleanup_cdc

cdc_enabled() { [ -f "$CDC_MARK" ]; }

cdc_psql() { "$PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"; }

cdc_resolve() { # connect/*.xml -> .dev/connect/{lib,plugins}, only when a pom changed
  local sum pom
  sum="$(cat "$ROOT/connect/pom.xml" "$ROOT/connect/debezium-pom.xml" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$CDC_DIR/.poms.sha256" 2>/dev/null || true)" = "$sum" ] &&
     compgen -G "$CONNECT_LIB/connect-runtime-*.jar" >/dev/null; then return 0; fi
  say "connect: resolving Kafka Connect and Debezium with Maven ..."
  rm -rf "$CONNECT_LIB" "$CONNECT_PLUGINS"
  for pom in pom.xml debezium-pom.xml; do
    (cd "$ROOT" && mvn -q -B -f "connect/$pom" generate-resources 2>&1 |
      sed -e 's/\x1b\[[0-9;]*m//g' -e '/^[[:space:]]*$/d' >&2) || die "mvn failed on connect/$pom"
  done
  echo "$sum" >"$CDC_DIR/.poms.sha256"
}

cdc_logical_wal() { # wal_level=logical; restarts PostgreSQL once when it changes
  [ "$(cdc_psql -d postgres -c 'SHOW wal_level')" = logical ] && return 0
  say "postgres: wal_level=logical (restarting once)"
  cdc_psql -d postgres -c "ALTER SYSTEM SET wal_level = logical" \
    -c "ALTER SYSTEM SET max_replication_slots = 20" -c "ALTER SYSTEM SET max_wal_senders = 20"
  pg_stop
  pg_start
  pg_wait
}

cdc_provision_pg() {
  cdc_psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$CDC_DB'" | grep -q 1 ||
    cdc_psql -d postgres -c "CREATE DATABASE $CDC_DB"
  cdc_psql -d "$CDC_DB" <<SQL
CREATE TABLE IF NOT EXISTS $CDC_TABLE (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  text        NOT NULL,
    iam_id      text        NOT NULL,
    state       text        NOT NULL DEFAULT 'active',
    role        text        NOT NULL DEFAULT 'member',
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$CDC_LOGIN') THEN
    CREATE ROLE $CDC_LOGIN LOGIN REPLICATION PASSWORD '$CDC_PASSWORD';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '$CDC_PUBLICATION') THEN
    CREATE PUBLICATION $CDC_PUBLICATION FOR TABLE $CDC_TABLE;
  END IF;
END \$\$;
GRANT CONNECT ON DATABASE $CDC_DB TO $CDC_LOGIN;
GRANT USAGE ON SCHEMA public TO $CDC_LOGIN;
GRANT SELECT ON $CDC_TABLE TO $CDC_LOGIN;
SQL
}

connect_pid() {
  local p
  p="$(cat "$CONNECT_PIDFILE" 2>/dev/null || true)"
  if pid_matches "$p" ConnectStandalone "$CONNECT_CONF"; then echo "$p"; fi
}

connect_write_config() {
  mkdir -p "$CDC_DIR" "$LOGDIR/connect"
  cat >"$CONNECT_CONF" <<CONF
# Written by scripts/dev-services up --cdc; edit the script, not this file.
bootstrap.servers=$BOOTSTRAP
listeners=http://$HOST:$CONNECT_PORT
plugin.path=$CONNECT_PLUGINS
offset.storage.file.filename=$CDC_DIR/offsets
# Debezium confirms the slot's position when offsets are flushed (Connect's default: 60 s);
# a worker killed in between re-sends what followed the last flush, as in production.
offset.flush.interval.ms=5000
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
CONF
  cat >"$CONNECT_LOG4J" <<CONF
status = warn
name = kafka-connect
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOGDIR/connect/connect.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.file.ref = FILE
CONF
}

connect_start() {
  cdc_resolve
  local before
  before="$(cat "$CONNECT_CONF" 2>/dev/null || true)"
  connect_write_config
  if [ -n "$(connect_pid)" ] && [ "$before" != "$(cat "$CONNECT_CONF")" ]; then
    say "connect: configuration changed, restarting the worker"
    connect_stop
  fi
  CONNECT_PID="$(connect_pid)"
  if [ -n "$CONNECT_PID" ]; then say "connect: already running (pid $CONNECT_PID)"; return 0; fi
  if tcp_open "$CONNECT_PORT"; then die "port $HOST:$CONNECT_PORT is already taken by another process"; fi
  local jar
  jar="$(basename "$(ls "$CONNECT_LIB"/connect-runtime-*.jar)" .jar)"
  say "connect: starting Kafka Connect ${jar#connect-runtime-} on $CONNECT_URL"
  start_detached "$CONNECT_PIDFILE" "$CONNECT_OUT" "$("$KAFKA_SH" --java)" \
    -Xms128m -Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$CONNECT_LOG4J" \
    -cp "$CONNECT_LIB/*" org.apache.kafka.connect.cli.ConnectStandalone "$CONNECT_CONF"
  CONNECT_PID="$(cat "$CONNECT_PIDFILE")"
}

connect_wait() {
  local t0=$SECONDS
  until curl -fsS "$CONNECT_URL/connector-plugins" 2>/dev/null | grep -q PostgresConnector; do
    if ! kill -0 "$CONNECT_PID" 2>/dev/null; then
      log_tail "$CONNECT_OUT"; log_tail "$LOGDIR/connect/connect.log"; die "connect exited during startup"
    fi
    if [ $((SECONDS - t0)) -ge "$CONNECT_START_TIMEOUT" ]; then
      log_tail "$LOGDIR/connect/connect.log"; die "connect did not list the Debezium plugin within ${CONNECT_START_TIMEOUT}s"
    fi
    sleep 1
  done
  say "connect: ready at $CONNECT_URL (Debezium PostgreSQL connector loaded)"
}

connector_config() { # NAME TOPIC_PREFIX SCHEMAS(true|false)
  cat <<JSON
{"connector.class": "io.debezium.connector.postgresql.PostgresConnector",
 "tasks.max": "1",
 "database.hostname": "$HOST", "database.port": "$PG_PORT", "database.dbname": "$CDC_DB",
 "database.user": "$CDC_LOGIN", "database.password": "$CDC_PASSWORD",
 "topic.prefix": "$2", "table.include.list": "$CDC_TABLE",
 "plugin.name": "pgoutput", "publication.name": "$CDC_PUBLICATION",
 "publication.autocreate.mode": "disabled",
 "slot.name": "$(echo "$1" | tr '-' '_')_$PG_HASH",
 "snapshot.mode": "initial", "poll.interval.ms": "50",
 "key.converter": "org.apache.kafka.connect.json.JsonConverter",
 "key.converter.schemas.enable": "$3",
 "value.converter": "org.apache.kafka.connect.json.JsonConverter",
 "value.converter.schemas.enable": "$3"}
JSON
}

connector_running() { # NAME
  curl -fsS "$CONNECT_URL/connectors/$1/status" 2>/dev/null | tr -d ' \n' |
    grep -q '"tasks":\[{"id":0,"state":"RUNNING"'
}

cdc_register() { # NAME TOPIC_PREFIX SCHEMAS
  local topic="$2.${CDC_TABLE}" t0=$SECONDS restarts=0
  "$KAFKA_SH" topics --bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$topic" \
    --partitions 3 --replication-factor 1 >/dev/null
  curl -fsS -X PUT -H 'Content-Type: application/json' --data "$(connector_config "$@")" \
    "$CONNECT_URL/connectors/$1/config" >/dev/null || die "connect refused the connector $1"
  until connector_running "$1"; do
    if curl -fsS "$CONNECT_URL/connectors/$1/status" 2>/dev/null | grep -q FAILED; then
      # A task fails for good when PostgreSQL goes away under it (a restart, or a test's
      # outage); `up` brings PostgreSQL back, so it restarts what failed, as an operator would.
      if [ "$restarts" -lt 3 ]; then
        restarts=$((restarts + 1))
        say "connect: connector $1 failed; restarting it (attempt $restarts)"
        curl -fsS -X POST "$CONNECT_URL/connectors/$1/restart?includeTasks=true&onlyFailed=true" \
          >/dev/null || true
        sleep 1
        continue
      fi
      curl -sS "$CONNECT_URL/connectors/$1/status" | head -c 3000 >&2; echo >&2
      die "connector $1 failed, and again after $restarts restarts"
    fi
    [ $((SECONDS - t0)) -lt 60 ] || die "connector $1 not running within 60 s"
    sleep 0.5
  done
  say "connect: connector $1 running -> $topic"
}

cdc_up() {
  cdc_logical_wal
  cdc_provision_pg
  connect_start
  connect_wait
  cdc_register directory directory false
  cdc_register directory-schemas directory_schemas true
  cat >"$DEV/cdc.env.tmp" <<ENV
export CLEANUP_CDC_TOPICS=directory.$CDC_TABLE
export CLEANUP_CDC_ACCOUNT_COLUMN=account_id
export CLEANUP_CDC_USER_COLUMN=iam_id
export CLEANUP_CDC_STATE_COLUMN=state
export CLEANUP_CDC_REMOVED_STATES=removed
export CDC_SOURCE_DATABASE_URL=postgresql://postgres@$HOST:$PG_PORT/$CDC_DB
export CDC_SOURCE_TABLE=$CDC_TABLE
export CDC_SCHEMAS_TOPIC=directory_schemas.$CDC_TABLE
export CDC_CONNECT_URL=$CONNECT_URL
export CDC_REPLICATION_USER=$CDC_LOGIN
export CDC_REPLICATION_PASSWORD=$CDC_PASSWORD
export CDC_PUBLICATION=$CDC_PUBLICATION
ENV
  mv "$DEV/cdc.env.tmp" "$DEV/cdc.env"
  say "cdc: Kafka Connect at $CONNECT_URL; environment in .dev/cdc.env"
}

connect_stop() {
  local pid
  pid="$(connect_pid)"
  if [ -z "$pid" ]; then rm -f "$CONNECT_PIDFILE"; return 0; fi
  say "connect: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" 10 || true; }
  rm -f "$CONNECT_PIDFILE"
  say "connect: stopped"
}

connect_status() {
  local pid
  pid="$(connect_pid)"
  if [ -n "$pid" ] && tcp_open "$CONNECT_PORT"; then
    echo "connect:  up    pid $pid  $CONNECT_URL  connectors: $(curl -fsS "$CONNECT_URL/connectors" 2>/dev/null)"
  else
    echo "connect:  down"; return 1
  fi
}
