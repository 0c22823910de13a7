# Sourced by scripts/dev-services: the secured services of `up --secure` (docs/design.md, "Real services in tests").
#
# Once `up --secure` has run, the checkout stays in secure mode (.dev/secure/enabled) until
# `purge`: a later plain `up` (the test fixtures, CI's `make services`) keeps the secure
# listeners instead of restarting the broker without them. Plain clients are unaffected:
# the PLAINTEXT listener and trust-auth PostgreSQL over 127.0.0.1 stay as they are.
#
# What it adds (everything generated under .dev/secure/, reused on the next `up`):
#   - a dev CA; a server certificate (SAN 127.0.0.1, localhost) for the broker and PostgreSQL;
#     client certificates CN=cleanup-worker (key encrypted) and CN=cleanup-operator;
#     for the failure tests: a second, untrusted CA with a client certificate of its own,
#     and a server certificate for another host name (served by the WRONGHOST listener).
#   - Kafka listeners SASL_SSL (SCRAM-SHA-512), SSL (client certificate required; the
#     principal is the certificate's CN), WRONGHOST (SSL, the wrong-name certificate);
#     StandardAuthorizer; SCRAM users; least-privilege ACLs (see secure_acls).
#   - PostgreSQL ssl=on and a SCRAM login `cleanup_app` that is only a member of
#     `cleanup_worker`, accepted over hostssl only; the database `cleanup_secure`.
#   - .dev/secure.env (SASL_SSL/SCRAM) and .dev/secure-mtls.env (mutual TLS).
#
# DEV ONLY: User:ANONYMOUS (the PLAINTEXT and CONTROLLER listeners) is a super user, so
# the plain tests and the set-up commands keep working. A production broker has no
# unauthenticated listener, or grants ANONYMOUS nothing.

SEC="$DEV/secure"
SEC_MARK="$SEC/enabled"
KAFKA_SASL_PORT="${CLEANUP_DEV_KAFKA_SASL_SSL_PORT:-$((KAFKA_PORT + 2))}"
KAFKA_MTLS_PORT="${CLEANUP_DEV_KAFKA_SSL_PORT:-$((KAFKA_PORT + 3))}"
KAFKA_WRONGHOST_PORT="${CLEANUP_DEV_KAFKA_WRONGHOST_PORT:-$((KAFKA_PORT + 4))}"
SEC_TOPIC="account-membership"
SEC_DLQ="account-membership.dlq"
SEC_REVOCATIONS="api-key-revocations"
SEC_GROUP="api-key-cleanup"
SEC_WORKER="cleanup-worker"
SEC_OPERATOR="cleanup-operator"
PG_LOGIN="cleanup_app"
PG_SECURE_DB="cleanup_secure"
# Bump when the ACLs or users below change, so an existing broker is provisioned again.
SEC_PROVISION_VERSION=1

secure_enabled() { [ -f "$SEC_MARK" ]; }

# a password kept in a file of its own (0600), made once
secret() {
  local file="$SEC/$1.pw"
  [ -s "$file" ] || (umask 077 && openssl rand -hex 16 >"$file")
  cat "$file"
}

# issue NAME SUBJECT [SAN] [CA]: a key and a certificate signed by CA (default: the dev CA)
issue() {
  local name="$1" subj="$2" san="${3:-}" ca="${4:-ca}" ext="$SEC/$1.ext"
  [ -s "$SEC/$name.pem" ] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "$SEC/$name.key" -subj "$subj" \
    -out "$SEC/$name.csr" 2>/dev/null
  { echo "basicConstraints=CA:FALSE"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; echo "extendedKeyUsage=serverAuth"
    else echo "extendedKeyUsage=clientAuth"; fi; } >"$ext"
  openssl x509 -req -in "$SEC/$name.csr" -CA "$SEC/$ca.pem" -CAkey "$SEC/$ca.key" \
    -CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$SEC/$name.pem" 2>/dev/null
  rm -f "$SEC/$name.csr" "$ext"
}

make_ca() {
  [ -s "$SEC/$1.pem" ] && return 0
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$SEC/$1.key" -days 3650 -sha256 \
    -subj "/O=cleanup-worker dev/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$SEC/$1.pem" 2>/dev/null
}

secure_certs() {
  command -v openssl >/dev/null || die "openssl is needed for --secure (apt-get install openssl)"
  mkdir -p "$SEC" && chmod 700 "$SEC"
  make_ca ca "cleanup-worker dev CA"
  make_ca rogue-ca "an untrusted CA"
  issue server "/O=cleanup-worker dev/CN=localhost" "IP:127.0.0.1,DNS:localhost"
  issue wronghost "/O=cleanup-worker dev/CN=other.invalid" "DNS:other.invalid"
  issue worker "/O=cleanup-worker dev/CN=$SEC_WORKER"
  issue operator "/O=cleanup-worker dev/CN=$SEC_OPERATOR"
  issue rogue-client "/O=cleanup-worker dev/CN=$SEC_WORKER" "" rogue-ca
  # The worker's key encrypted, as a production key would be (CLEANUP_KAFKA_SSL_KEY_PASSWORD).
  if [ ! -s "$SEC/worker-encrypted.key" ]; then
    openssl pkcs8 -topk8 -v2 aes-256-cbc -in "$SEC/worker.key" -passout "pass:$(secret worker-key)" \
      -out "$SEC/worker-encrypted.key"
  fi
  local store
  for store in server wronghost; do
    [ -s "$SEC/$store.p12" ] && continue
    openssl pkcs12 -export -in "$SEC/$store.pem" -inkey "$SEC/$store.key" -certfile "$SEC/ca.pem" \
      -name broker -passout "pass:$(secret keystore)" -out "$SEC/$store.p12"
  done
  chmod 600 "$SEC"/*.key "$SEC"/*.p12
}

# the broker configuration's secure part (appended by kafka_write_config)
secure_kafka_config() {
  cat <<EOF

# ---- secure mode (scripts/dev-secure.sh) ----
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CTRL_PORT,SASL_SSL://$HOST:$KAFKA_SASL_PORT,SSL://$HOST:$KAFKA_MTLS_PORT,WRONGHOST://$HOST:$KAFKA_WRONGHOST_PORT,PROXIED://$HOST:$KAFKA_PROXIED_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,SASL_SSL://$HOST:$KAFKA_SASL_PORT,SSL://$HOST:$KAFKA_MTLS_PORT,WRONGHOST://$HOST:$KAFKA_WRONGHOST_PORT,PROXIED://$HOST:$KAFKA_PROXY_PORT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,WRONGHOST:SSL,PROXIED:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$SEC/server.p12
ssl.keystore.password=$(secret keystore)
ssl.truststore.type=PEM
ssl.truststore.location=$SEC/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.wronghost.ssl.keystore.type=PKCS12
listener.name.wronghost.ssl.keystore.location=$SEC/wronghost.p12
listener.name.wronghost.ssl.keystore.password=$(secret keystore)
# The principal of a client certificate is its CN: User:cleanup-worker over mTLS is the
# same principal as the SCRAM user cleanup-worker, so one set of ACLs serves both.
ssl.principal.mapping.rules=RULE:^CN=([^,]+).*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
# DEV ONLY: the unauthenticated PLAINTEXT/CONTROLLER listeners' principal, for set-up and
# the plain tests. Never in production.
super.users=User:ANONYMOUS
allow.everyone.if.no.acl.found=false
EOF
}

kafka_admin() { timeout 120 "$KAFKA_SH" "$@" --bootstrap-server "$BOOTSTRAP" >>"$LOGDIR/kafka-secure.log" 2>&1 ||
  { log_tail "$LOGDIR/kafka-secure.log" 20; die "kafka $1 failed during secure set-up"; }; }

# The least-privilege ACLs. The worker: read its topics and its group, write (and describe)
# the dead-letter and revocation topics. The operator (replay, dlq list/redrive): read the
# topics it re-reads, outside any group. READ and WRITE imply DESCRIBE in Kafka's ACLs.
secure_acls() {
  kafka_admin acls --add --allow-principal "User:$SEC_WORKER" --operation Read \
    --topic "$SEC_TOPIC" --group "$SEC_GROUP"
  kafka_admin acls --add --allow-principal "User:$SEC_WORKER" --operation Write --operation Describe \
    --topic "$SEC_DLQ" --topic "$SEC_REVOCATIONS"
  kafka_admin acls --add --allow-principal "User:$SEC_OPERATOR" --operation Read \
    --topic "$SEC_TOPIC" --topic "$SEC_DLQ"
}

# SCRAM users, ACLs and the default topics, once per cluster (a stamp keeps the next `up` fast).
secure_provision_kafka() {
  local cid stamp
  cid="$(sed -n 's/^cluster.id=//p' "$KAFKA_DATA/meta.properties")"
  stamp="$cid v$SEC_PROVISION_VERSION $(secret kafka-worker) $(secret kafka-operator)"
  if [ "$(cat "$SEC/kafka-provisioned" 2>/dev/null || true)" = "$stamp" ]; then return 0; fi
  say "kafka: secure set-up (SCRAM users, ACLs, topics $SEC_TOPIC, $SEC_DLQ)"
  local user
  for user in "$SEC_WORKER:kafka-worker" "$SEC_OPERATOR:kafka-operator"; do
    kafka_admin configs --alter --entity-type users --entity-name "${user%%:*}" \
      --add-config "SCRAM-SHA-512=[password=$(secret "${user#*:}")]"
  done
  secure_acls
  kafka_admin topics --create --if-not-exists --topic "$SEC_TOPIC" --partitions 3
  kafka_admin topics --create --if-not-exists --topic "$SEC_DLQ" --partitions 1
  echo "$stamp" >"$SEC/kafka-provisioned"
}

pg_sql() { PGOPTIONS="-c client_min_messages=warning" "$PG_BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }

# PostgreSQL: TLS with the dev CA's server certificate, the SCRAM login, hostssl only.
secure_provision_pg() {
  local data="$PG_DATA" hba
  install -m 600 "$SEC/server.pem" "$data/server.crt"
  install -m 600 "$SEC/server.key" "$data/server.key"
  is_root && chown postgres:postgres "$data/server.crt" "$data/server.key"
  hba="$(mktemp)"
  cat >"$hba" <<EOF
# Written by scripts/dev-services (secure mode). The worker's login only over TLS, with
# its SCRAM password; everything else as initdb set it up (trust, dev only).
local   all  all                      trust
hostssl all  $PG_LOGIN  127.0.0.1/32  scram-sha-256
host    all  $PG_LOGIN  all           reject
host    all  all        127.0.0.1/32  trust
host    all  all        ::1/128       trust
EOF
  install -m 600 "$hba" "$data/pg_hba.conf" && rm -f "$hba"
  is_root && chown postgres:postgres "$data/pg_hba.conf"
  pg_sql <<EOF >/dev/null
ALTER SYSTEM SET ssl = on;
ALTER SYSTEM SET ssl_cert_file = 'server.crt';
ALTER SYSTEM SET ssl_key_file = 'server.key';
ALTER SYSTEM SET password_encryption = 'scram-sha-256';
SELECT pg_reload_conf();
EOF
  # The role the migrations create (0003), made here too so the login can join it first.
  pg_sql <<EOF >/dev/null
DO \$\$ BEGIN CREATE ROLE cleanup_worker NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$\$;
DO \$\$ BEGIN CREATE ROLE $PG_LOGIN LOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END \$\$;
ALTER ROLE $PG_LOGIN LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD '$(secret pg-login)';
GRANT cleanup_worker TO $PG_LOGIN;
EOF
  if [ -z "$(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = '$PG_SECURE_DB'")" ]; then
    pg_sql -c "CREATE DATABASE $PG_SECURE_DB" >/dev/null
  fi
  local t0=$SECONDS
  until [ "$(pg_sql -c 'SHOW ssl')" = on ]; do
    [ $((SECONDS - t0)) -lt 10 ] || { log_tail "$PG_LOG"; die "postgres did not turn ssl on"; }
    sleep 0.2
  done
}

write_secure_env() {
  local db="postgresql://$PG_LOGIN:$(secret pg-login)@$HOST:$PG_PORT/$PG_SECURE_DB?sslmode=verify-full&sslrootcert=$SEC/ca.pem"
  (umask 077
  cat >"$DEV/secure.env.tmp" <<EOF
# The worker over SASL_SSL with SCRAM-SHA-512, the database over TLS (verify-full) as the
# least-privilege login. Written by scripts/dev-services up --secure. Holds passwords: 0600.
export CLEANUP_DATABASE_URL='$db'
export CLEANUP_KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_SASL_PORT
export CLEANUP_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export CLEANUP_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export CLEANUP_KAFKA_SASL_USERNAME=$SEC_WORKER
export CLEANUP_KAFKA_SASL_PASSWORD=$(secret kafka-worker)
export CLEANUP_KAFKA_SSL_CAFILE=$SEC/ca.pem
# The operator's SCRAM identity, for replay and dlq (set CLEANUP_KAFKA_SASL_* to these):
export CLEANUP_DEV_OPERATOR_SASL_USERNAME=$SEC_OPERATOR
export CLEANUP_DEV_OPERATOR_SASL_PASSWORD=$(secret kafka-operator)
# For the failure tests: an SSL listener whose certificate names another host.
export CLEANUP_DEV_KAFKA_WRONGHOST_SERVERS=$HOST:$KAFKA_WRONGHOST_PORT
EOF
  cat >"$DEV/secure-mtls.env.tmp" <<EOF
# The worker over mutual TLS (principal User:$SEC_WORKER from the certificate's CN), the
# database as in secure.env. Written by scripts/dev-services up --secure. Holds passwords: 0600.
export CLEANUP_DATABASE_URL='$db'
export CLEANUP_KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_MTLS_PORT
export CLEANUP_KAFKA_SECURITY_PROTOCOL=SSL
export CLEANUP_KAFKA_SSL_CAFILE=$SEC/ca.pem
export CLEANUP_KAFKA_SSL_CERTFILE=$SEC/worker.pem
export CLEANUP_KAFKA_SSL_KEYFILE=$SEC/worker-encrypted.key
export CLEANUP_KAFKA_SSL_KEY_PASSWORD=$(secret worker-key)
# The operator's certificate (unencrypted key), for replay and dlq:
export CLEANUP_DEV_OPERATOR_SSL_CERTFILE=$SEC/operator.pem
export CLEANUP_DEV_OPERATOR_SSL_KEYFILE=$SEC/operator.key
EOF
  )
  mv "$DEV/secure.env.tmp" "$DEV/secure.env"
  mv "$DEV/secure-mtls.env.tmp" "$DEV/secure-mtls.env"
}

# wait until the secure listeners accept connections (the broker opens them after PLAINTEXT)
secure_kafka_wait() {
  local t0=$SECONDS p
  for p in "$KAFKA_SASL_PORT" "$KAFKA_MTLS_PORT" "$KAFKA_WRONGHOST_PORT"; do
    until tcp_open "$p"; do
      [ $((SECONDS - t0)) -lt "$KAFKA_START_TIMEOUT" ] || kafka_fail "kafka did not open $HOST:$p"
      sleep 0.3
    done
  done
}
