#!/usr/bin/env bash
# servers.sh — private RabbitMQ, PostgreSQL (a primary and a streaming standby) and SMTP sink
# for herald's tests, on 127.0.0.1, without systemd or Docker, each with TLS next to its plain
# listener (a throwaway CA made at `up`). Everything (data, logs, pid files, certificates)
# lives in one state directory.
#
#   servers.sh up [rabbitmq|postgres|standby|smtp|redis ...]
#                                                start (default: all), write $HD_SERVERS_DIR/env
#   servers.sh up --management [SERVER...]       the same, with RabbitMQ's management UI
#   servers.sh down                              stop everything, remove the state directory
#   servers.sh run -- CMD ARGS...                up, run CMD with the env exported, down, exit
#                                                with CMD's status (what `make test` uses)
#   servers.sh start|stop|restart SERVER...      one server, same data (durable queues survive)
#   servers.sh status                            what runs where (exit 3 if something is down)
#   servers.sh env                               print the env file (`. "$HD_SERVERS_DIR/env"`)
#   servers.sh rabbitmqctl ARGS...               rabbitmqctl against the private node
#   servers.sh cluster-ctl ARGS...               rabbitmqctl against the first running cluster node
#
# The three-node RabbitMQ cluster (next to the single node, which stays what most tests use):
#   servers.sh up --cluster [SERVER...]          also start the cluster (HD_RABBIT_CLUSTER=1 does
#   servers.sh run --cluster -- CMD ...          the same for `up`/`run` without names; `make
#                                                test` sets it: the cluster starts once per suite)
#   servers.sh up|start|stop|restart cluster     all three nodes
#   servers.sh start|stop|restart rabbit1..3     one node (or its node name herald<i>@localhost)
#   servers.sh kill rabbit1..3                   kill -9 of one node's VM (a crash, for failover tests)
#   Nodes herald1@localhost .. herald3@localhost, node i on AMQP port HD_AMQP_PORT+10*i (default
#   5683, 5693, 5703), TLS +1 and distribution +2 of that; data under $HD_SERVERS_DIR/cluster/
#   node<i>, one shared Erlang cookie; nodes 2 and 3 `rabbitmqctl join_cluster` node 1 once
#   (a restarted node rejoins by itself). `status` shows the members and the leader and
#   members of each quorum queue. The env file exports HD_CLUSTER_URL_1..3, HD_CLUSTER_NODE_1..3,
#   HD_CLUSTER_URLS and HD_CLUSTER_NODES (comma-separated; HD_CLUSTER_URLS is a valid
#   HD_AMQP_URL for herald's clients, which fail over along the list).
#   servers.sh psql ARGS...                      psql against the private server
#
# Configuration (environment; the ports are remembered in the state directory, so later
# commands on the same directory need only HD_SERVERS_DIR):
#   HD_SERVERS_DIR       state directory          default ${TMPDIR:-/tmp}/herald-servers
#   HD_AMQP_PORT 5673  HD_RABBIT_DIST_PORT 25673  HD_EPMD_PORT 4370  HD_PG_PORT 5433
#   HD_SMTP_PORT 2525  HD_AMQPS_PORT 5674  HD_PG_STANDBY_PORT 5434  HD_SMTP_TLS_PORT 2526
#                      (all below 32768: the ephemeral range is taken by client sockets)
#   HD_RABBIT_MANAGEMENT 0   1: enable the rabbitmq_management plugin (the web UI, to watch
#                            queues fill and drain) on 127.0.0.1:HD_RABBIT_MGMT_PORT (15673),
#                            user guest, password guest; remembered like the ports. Off by
#                            default: the plugin makes the broker's boot a few seconds slower.
#
# TLS: $HD_SERVERS_DIR/tls holds a throwaway CA (ca.crt) and its server certificate
# (server.crt/.key: CN 127.0.0.1, SAN 127.0.0.1 and localhost), made once per state directory,
# and an unrelated CA (wrong-ca.crt) that must be refused. RabbitMQ listens with TLS on
# HD_AMQPS_PORT, PostgreSQL (primary and standby) has ssl=on on its one port (the client
# chooses with sslmode); the SMTP sink is plain on HD_SMTP_PORT, and a second sink (same
# maildir) offers STARTTLS on HD_SMTP_TLS_PORT (see smtp_start). None of them requires TLS.
# For the clients' refusal tests the CA also signs an expired certificate (expired.crt/.key,
# valid in 2020 only) and one for another host (wrong-host.crt/.key: wrong.example).
#
# The standby: pg_basebackup -R of the primary (replication slot herald_standby), hot standby
# on HD_PG_STANDBY_PORT. `stop standby` / `start standby` alone; `status` shows its lag.
#
# Redis (the pub/sub bus, bus_redis.h): redis-server on 127.0.0.1:HD_REDIS_PORT (6380), no
# persistence (nothing of it outlives a stop), AUTH with a password generated once per state
# directory ($HD_SERVERS_DIR/redis/password, mode 0600; in redis.conf, never on a command line).
#
# The env file (mode 0600: it holds the Redis password) exports HD_AMQP_URL, HD_AMQPS_URL,
# HD_PG_URL, HD_PG_STANDBY_URL, HD_SMTP_URL, HD_SMTP_TLS_URL, HD_REDIS_URL (redis://:password@127.0.0.1:port),
# HD_SMTP_MAILDIR, HD_TLS_CA_FILE, HD_TLS_WRONG_CA_FILE, HD_TLS_DIR, HD_SERVERS_DIR,
# HD_SERVERS_CTL (this script) and the ports (with the management UI also HD_RABBIT_MGMT_URL).
# See docs/testing.md.
set -uo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
PY=/usr/bin/python3                   # Debian's python3-aiosmtpd; a pyenv python lacks it
RMQ_BIN=/usr/lib/rabbitmq/bin         # the inner scripts: /usr/sbin/* would su to rabbitmq
RMQ_MAX_MESSAGE_SIZE=1048576          # 1 MiB: rabbitmq.conf max_message_size (the services assume it)
PG_BIN=/usr/lib/postgresql/15/bin
ALL_SERVERS=(rabbitmq postgres standby smtp redis)   # the start order: the standby copies postgres
REDIS_BIN=/usr/bin/redis-server
STANDBY_SLOT=herald_standby
NODE=herald@localhost
RMARK=rabbitmq                        # the mark of the node in hand (cluster: rabbit1..3)
CLUSTER_SIZE=3
CLUSTER_MARKS=(rabbit1 rabbit2 rabbit3)

DIR=$(readlink -m "${HD_SERVERS_DIR:-${TMPDIR:-/tmp}/herald-servers}")
R=$DIR/rabbitmq
P=$DIR/postgres
SB=$DIR/standby
S=$DIR/smtp
T=$DIR/tls
X=$DIR/redis
C=$DIR/cluster
# Every process we start carries HD_SERVERS_MARK=<dir>:<server> in its environment: after a
# crash that is how leftovers of *this* state directory are found, and nothing else is touched.
unset HD_SERVERS_MARK

say() { printf 'servers: %s\n' "$*"; }
warn() { printf 'servers: %s\n' "$*" >&2; }
die() { warn "error: $*"; exit 1; }
now_us() { echo "${EPOCHREALTIME/./}"; }
since() { local d=$(($(now_us) - $1)); printf '%d.%d s' $((d / 1000000)) $((d % 1000000 / 100000)); }
tail_log() { # file — show why a start failed
  [ -s "$1" ] || return 0
  warn "---- last lines of $1 ----"
  tail -n 25 "$1" | sed 's/^/    /' >&2
  warn "----"
}
usage() { sed -n '2,/^set -uo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; }

# ---- configuration ---------------------------------------------------------------------
load_config() {
  AMQP_PORT=5673 DIST_PORT=25673 EPMD_PORT=4370 PG_PORT=5433 SMTP_PORT=2525
  AMQPS_PORT=5674 STANDBY_PORT=5434 SMTP_TLS_PORT=2526
  MGMT_PORT=15673 MANAGEMENT=0
  REDIS_PORT=6380
  if [ -f "$DIR/config" ]; then
    # shellcheck disable=SC1091
    . "$DIR/config"
  fi
}
# Explicit HD_*_PORT variables win when nothing of this directory runs; otherwise the ports
# of the running instance stay (a restart must come back where the clients expect it).
apply_env_ports() {
  local pair key envname val cur running=0
  any_alive && running=1
  for pair in AMQP_PORT:HD_AMQP_PORT DIST_PORT:HD_RABBIT_DIST_PORT EPMD_PORT:HD_EPMD_PORT \
              PG_PORT:HD_PG_PORT SMTP_PORT:HD_SMTP_PORT MGMT_PORT:HD_RABBIT_MGMT_PORT \
              AMQPS_PORT:HD_AMQPS_PORT STANDBY_PORT:HD_PG_STANDBY_PORT \
              REDIS_PORT:HD_REDIS_PORT SMTP_TLS_PORT:HD_SMTP_TLS_PORT; do
    key=${pair%%:*} envname=${pair#*:}
    val=${!envname:-}
    [ -n "$val" ] || continue
    [[ $val =~ ^[0-9]+$ ]] && [ "$val" -gt 0 ] && [ "$val" -lt 65536 ] ||
      die "$envname=$val is not a port number"
    cur=${!key}
    [ "$val" = "$cur" ] && continue
    if [ $running = 1 ]; then
      warn "ignoring $envname=$val: the instance in $DIR runs with $cur"
    else
      printf -v "$key" '%s' "$val"
    fi
  done
  val=${HD_RABBIT_MANAGEMENT:-}
  if [ -n "$val" ]; then
    case $val in 1 | true | yes | on) val=1 ;; 0 | false | no | off) val=0 ;;
      *) die "HD_RABBIT_MANAGEMENT=$val is not 0 or 1" ;; esac
    # Remembered either way; a running broker gets it at its next start.
    [ "$val" != "$MANAGEMENT" ] && rabbit_alive &&
      warn "HD_RABBIT_MANAGEMENT=$val applies when RabbitMQ restarts ('$SELF restart rabbitmq')"
    MANAGEMENT=$val
  fi
}
save_config() {
  printf 'AMQP_PORT=%s\nDIST_PORT=%s\nEPMD_PORT=%s\nPG_PORT=%s\nSMTP_PORT=%s\nMGMT_PORT=%s\nMANAGEMENT=%s\nAMQPS_PORT=%s\nSTANDBY_PORT=%s\n' \
    "$AMQP_PORT" "$DIST_PORT" "$EPMD_PORT" "$PG_PORT" "$SMTP_PORT" "$MGMT_PORT" "$MANAGEMENT" \
    "$AMQPS_PORT" "$STANDBY_PORT" >"$DIR/config"
  printf 'REDIS_PORT=%s\n' "$REDIS_PORT" >>"$DIR/config"
  printf 'SMTP_TLS_PORT=%s\n' "$SMTP_TLS_PORT" >>"$DIR/config"
}

# Serialise commands that change the instance (two helpers restarting at once, a test's
# restart during `run`). fd 9 is closed in every process we start, or a server would keep
# the lock after we exit.
lock() {
  mkdir -p "$DIR" || die "cannot create $DIR"
  chmod 755 "$DIR"   # the postgres user must reach $DIR/postgres
  exec 9>>"$DIR/.lock"
  flock -w 600 9 || die "another servers.sh holds $DIR/.lock"
}
unlock() { exec 9>&-; }

# ---- processes -------------------------------------------------------------------------
marked_pids() { # server — our live processes for it, even if the pid files are gone
  grep -lzxF -- "HD_SERVERS_MARK=$DIR:$1" /proc/[0-9]*/environ 2>/dev/null |
    cut -d/ -f3 | grep -vx -e "$$" -e "${BASHPID:-$$}" || true
}
pid_is() { # pid server — alive and started by us for this directory (not a reused pid)
  [[ ${1:-} =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
    grep -qzxF -- "HD_SERVERS_MARK=$DIR:$2" "/proc/$1/environ" 2>/dev/null
}
pidfile_is() { [ -s "$1" ] && pid_is "$(head -n 1 "$1")" "$2"; }
gone() { # pid — exited (a zombie counts: init reaps orphans late on some machines)
  [ ! -e "/proc/$1" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ] ||
    ! kill -0 "$1" 2>/dev/null
}
wait_gone() { # seconds pid... — true once all are gone
  local deadline=$((SECONDS + $1)) p left
  shift
  while :; do
    left=0
    for p in "$@"; do gone "$p" || left=1; done
    [ $left = 0 ] && return 0
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.05
  done
}
sweep() { # server — end leftovers (TERM, then KILL)
  local pids
  pids=$(marked_pids "$1")
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  {
    say "$1: ending leftover processes $(echo $pids)"
    kill -TERM $pids 2>/dev/null
    wait_gone 5 $pids || kill -KILL $pids 2>/dev/null
    wait_gone 2 $pids
  }
  return 0
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free() { # port what
  if port_open "$1"; then
    warn "error: 127.0.0.1:$1 ($2) is already in use by another process."
    warn "  Another herald instance? Reuse it with HD_SERVERS_DIR=<its dir>, or pick other"
    warn "  ports (HD_AMQP_PORT, HD_AMQPS_PORT, HD_RABBIT_DIST_PORT, HD_EPMD_PORT, HD_PG_PORT,"
    warn "  HD_PG_STANDBY_PORT, HD_SMTP_PORT, HD_SMTP_TLS_PORT)."
    return 1
  fi
}

rabbit_alive() { pidfile_is "$R/server.pid" "$RMARK" || pidfile_is "$R/rabbit.pid" "$RMARK"; }
pg_alive() { pidfile_is "$P/data/postmaster.pid" postgres; }
standby_alive() { pidfile_is "$SB/data/postmaster.pid" standby; }
smtp_alive() { pidfile_is "$S/smtp.pid" smtp; }
redis_alive() { pidfile_is "$X/redis.pid" redis; }
alive() {
  case $1 in rabbitmq) rabbit_alive ;; postgres) pg_alive ;; standby) standby_alive ;;
    smtp) smtp_alive ;; redis) redis_alive ;; rabbit[1-9]) cnode_alive "${1#rabbit}" ;; esac
}
any_alive() { rabbit_alive || pg_alive || standby_alive || smtp_alive || redis_alive || cluster_any_alive; }

# ---- TLS -------------------------------------------------------------------------------
# A throwaway CA and one server certificate for all servers, made once per state directory
# (a restart keeps them: clients hold the CA file). EC P-256 keys: generated instantly, and
# every server and client here speaks ECDSA. Valid 10 years / 2 years: a long `up` never
# outlives them.
tls_make() {
  if [ -s "$T/ca.crt" ] && [ -s "$T/server.crt" ] && [ -s "$T/server.key" ] && [ -s "$T/wrong-ca.crt" ]; then
    [ -s "$T/expired.crt" ] && [ -s "$T/wrong-host.crt" ] && return 0
    # A state directory from before these two: add them, keep the CA the servers use.
    if ! (cd "$T" && umask 077 && tls_make_bad && chmod 644 expired.crt wrong-host.crt) \
        >"$DIR/tls.log" 2>&1; then
      warn "error: openssl could not make the expired and wrong-host certificates in $T"
      tail_log "$DIR/tls.log"
      return 1
    fi
    rm -f "$DIR/tls.log"
    return 0
  fi
  local t0
  t0=$(now_us)
  rm -rf "${T:?}"
  mkdir -p "$T" || return 1
  chmod 755 "$T"   # the certificates are public; the keys are not (below)
  # The SAN lists 127.0.0.1 twice: as an IP (what libpq, curl and Python check for an
  # address) and as a DNS name (librabbitmq 0.11 compares only DNS names, also for an
  # address), and localhost for clients that connect by name.
  cat >"$T/server.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:127.0.0.1, DNS:localhost
EOF
  if ! (cd "$T" && umask 077 &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
          -keyout ca.key -out ca.crt -subj "/O=herald tests/CN=herald test CA" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
          -keyout server.key -out server.csr -subj "/O=herald tests/CN=127.0.0.1" &&
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 730 \
          -extfile server.ext -out server.crt &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
          -keyout wrong-ca.key -out wrong-ca.crt -subj "/O=herald tests/CN=herald wrong CA" \
          -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
        tls_make_bad &&
        chmod 644 ca.crt server.crt wrong-ca.crt expired.crt wrong-host.crt &&
        rm -f server.csr) >"$DIR/tls.log" 2>&1; then
    warn "error: openssl could not make the test certificates in $T"
    tail_log "$DIR/tls.log"
    return 1
  fi
  rm -f "$DIR/tls.log"
  say "tls: CA $T/ca.crt, server certificate for 127.0.0.1/localhost in $(since "$t0")"
}
tls_make_bad() { # in $T: certificates of the right CA that clients must still refuse
  # expired.crt: valid 2020-01-01..2020-02-01. OpenSSL 3.0's `x509` cannot date a
  # certificate in the past (no -not_before); `openssl ca -startdate/-enddate` can, and needs
  # its small database (bad-ca/).
  mkdir -p bad-ca && : >bad-ca/index && printf '1000\n' >bad-ca/serial &&
    printf '%s\n' '[ca]' 'default_ca = bad' '[bad]' 'database = bad-ca/index' \
      'new_certs_dir = bad-ca' 'serial = bad-ca/serial' 'default_md = sha256' 'policy = any' \
      'unique_subject = no' '[any]' 'commonName = supplied' 'organizationName = optional' \
      >bad-ca/ca.cnf &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout expired.key -out expired.csr -subj "/O=herald tests/CN=127.0.0.1" &&
    openssl ca -batch -notext -config bad-ca/ca.cnf -cert ca.crt -keyfile ca.key \
      -startdate 20200101000000Z -enddate 20200201000000Z -extfile server.ext \
      -in expired.csr -out expired.crt &&
    # wrong-host.crt: valid now, but for wrong.example only.
    printf '%s\n' 'basicConstraints = critical, CA:FALSE' 'extendedKeyUsage = serverAuth' \
      'subjectAltName = DNS:wrong.example' >wrong-host.ext &&
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout wrong-host.key -out wrong-host.csr -subj "/O=herald tests/CN=wrong.example" &&
    openssl x509 -req -in wrong-host.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 730 \
      -extfile wrong-host.ext -out wrong-host.crt &&
    rm -rf expired.csr wrong-host.csr bad-ca
}
tls_copy_for_pg() { # dir — server.crt/.key in dir, owned by the server's user, key mode 0600
  # PostgreSQL refuses a key file that others (or, unless root owns it, its group) can read.
  cp "$T/server.crt" "$T/server.key" "$1/" || return 1
  chmod 644 "$1/server.crt" && chmod 600 "$1/server.key" || return 1
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$1/server.crt" "$1/server.key" || return 1; fi
}

# ---- RabbitMQ --------------------------------------------------------------------------
rabbit_env() { # export into the current (sub)shell: every path private, loopback only
  export HOME=$R/home LC_ALL=C.UTF-8
  export RABBITMQ_NODENAME=$NODE RABBITMQ_USE_LONGNAME=false
  export RABBITMQ_MNESIA_BASE=$R/mnesia RABBITMQ_LOG_BASE=$R/log RABBITMQ_PID_FILE=$R/rabbit.pid
  export RABBITMQ_ENABLED_PLUGINS_FILE=$R/enabled_plugins RABBITMQ_CONFIG_FILE=$R/rabbitmq.conf
  export RABBITMQ_CONF_ENV_FILE=$R/rabbitmq-env.conf RABBITMQ_ADVANCED_CONFIG_FILE=$R/advanced.config
  export RABBITMQ_DIST_PORT=$DIST_PORT ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$EPMD_PORT
  # The CLI tools listen on a distribution port too (default 35672+, in the ephemeral range).
  # Give them 30000-32767, where no server of ours listens; instances may share CLI ports.
  local ctl=$((30000 + DIST_PORT % 2700))
  export RABBITMQ_CTL_DIST_PORT_MIN=$ctl RABBITMQ_CTL_DIST_PORT_MAX=$((ctl + 10))
  # We run epmd ourselves: neither the broker nor a CLI call may leave another one behind.
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
  export ERL_CRASH_DUMP=$R/log/erl_crash.dump
}
# CLI calls carry the mark too: one left hanging on a dead node is swept with the rest.
rmqctl() {
  (rabbit_env && exec env "HD_SERVERS_MARK=$DIR:$RMARK" "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@") 9>&-
}
epmd_up() { (rabbit_env && exec epmd -port "$EPMD_PORT" -names) >/dev/null 2>&1 9>&-; }

rabbit_launch() { # starts the broker in the background; rabbit_wait finishes the job
  mkdir -p "$R/home" "$R/mnesia" "$R/log" || return 1
  chmod 700 "$R/home"
  if [ ! -s "$R/home/.erlang.cookie" ]; then
    rm -f "$R/home/.erlang.cookie"
    head -c 16 /dev/urandom | od -An -tx1 | tr -dc '0-9a-f' | tr 'a-f' 'A-Z' >"$R/home/.erlang.cookie"
    chmod 400 "$R/home/.erlang.cookie"
  fi
  if [ "$MANAGEMENT" = 1 ]; then
    printf '[rabbitmq_management].\n' >"$R/enabled_plugins"
  else
    printf '[].\n' >"$R/enabled_plugins"   # no plugins: the fastest boot
  fi
  printf '[].\n' >"$R/advanced.config"
  : >"$R/rabbitmq-env.conf"              # keeps /etc/rabbitmq/rabbitmq-env.conf out
  cat >"$R/rabbitmq.conf" <<EOF
# written by scripts/servers.sh
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
# TLS (amqps://) next to plain AMQP, with the harness's throwaway CA (tls_make); no client
# certificates are asked for.
listeners.ssl.default = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $T/ca.crt
ssl_options.certfile = $T/server.crt
ssl_options.keyfile = $T/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users.guest = true
log.console = false
log.file.level = info
# The largest message the broker accepts (bytes): a bigger publish closes the publisher's
# channel with 406 PRECONDITION_FAILED. It bounds what a consumer can be handed: at most
# prefetch x max_message_size bytes in flight (docs/modules/consumer.md, docs/testing.md).
max_message_size = $RMQ_MAX_MESSAGE_SIZE
EOF
  if [ "$MANAGEMENT" = 1 ]; then
    printf '# HD_RABBIT_MANAGEMENT=1: the management UI, loopback only\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = %s\n' \
      "$MGMT_PORT" >>"$R/rabbitmq.conf"
    port_free "$MGMT_PORT" "RabbitMQ management UI (HD_RABBIT_MGMT_PORT)" || return 1
  fi
  rm -f "$R/rabbit.pid" "$R/server.pid"
  port_free "$AMQP_PORT" "RabbitMQ AMQP" && port_free "$AMQPS_PORT" "RabbitMQ AMQPS" &&
    port_free "$DIST_PORT" "RabbitMQ distribution" || return 1
  if ! epmd_up; then
    port_free "$EPMD_PORT" "epmd" || return 1
    # Its own mark: the single node and the cluster's nodes share it (epmd_release).
    (rabbit_env && exec setsid env "HD_SERVERS_MARK=$DIR:epmd" \
      epmd -address 127.0.0.1 -port "$EPMD_PORT" -daemon) </dev/null >"$R/log/epmd.log" 2>&1 9>&-
    for _ in $(seq 50); do epmd_up && break; sleep 0.1; done
    epmd_up || { warn "error: epmd did not start on 127.0.0.1:$EPMD_PORT"; tail_log "$R/log/epmd.log"; return 1; }
  fi
  say "rabbitmq: starting node $NODE on 127.0.0.1:$AMQP_PORT, TLS $AMQPS_PORT (epmd $EPMD_PORT, distribution $DIST_PORT)"
  (cd "$R" && rabbit_env && exec setsid env "HD_SERVERS_MARK=$DIR:$RMARK" "$RMQ_BIN/rabbitmq-server") \
    </dev/null >"$R/log/startup.log" 2>&1 9>&- &
  echo $! >"$R/server.pid"
}

rabbit_wait() { # t0 — rabbitmqctl wait on the pid file, giving up early if the broker dies
  local t0=$1 w rc server
  server=$(cat "$R/server.pid")
  (rabbit_env && exec env "HD_SERVERS_MARK=$DIR:$RMARK" "$RMQ_BIN/rabbitmqctl" -n "$NODE" \
    wait "$R/rabbit.pid" --timeout 120) </dev/null >"$R/log/wait.log" 2>&1 9>&- &
  w=$!
  while kill -0 "$w" 2>/dev/null; do
    # kill -0, not the mark: just after the fork the launcher has not exec'd yet.
    if ! kill -0 "$server" 2>/dev/null; then
      kill "$w" 2>/dev/null
      wait "$w" 2>/dev/null
      warn "error: rabbitmq exited during startup"
      tail_log "$R/log/startup.log"
      tail_log "$R/log/$NODE.log"
      return 1
    fi
    sleep 0.2
  done
  wait "$w"
  rc=$?
  if [ $rc -ne 0 ] || ! port_open "$AMQP_PORT" || ! port_open "$AMQPS_PORT"; then
    warn "error: rabbitmq did not become ready (rabbitmqctl wait: exit $rc)"
    tail_log "$R/log/wait.log"
    tail_log "$R/log/startup.log"
    tail_log "$R/log/$NODE.log"
    return 1
  fi
  say "rabbitmq: ready in $(since "$t0") (pid $(head -n 1 "$R/rabbit.pid"), log $R/log/$NODE.log)"
}

# RabbitMQ 3.10 (Debian 12's) checks every 60 s that epmd runs by booting a throwaway Erlang
# VM (`erl -sname epmd-starter-N ... -s erlang halt`, rabbit_epmd_monitor ->
# rabbit_nodes_common:ensure_epmd), whether epmd runs or not: about 0.25 s of a whole core
# here, once a minute per node. On these 2 cores that stalls everything beside the broker:
# it was the stall behind the latency benchmark's misses (docs/bench.md, fifteenth pass).
# Upstream checks first since 3.11.28 / 3.12.13 (rabbitmq-server pull request 10457). Here
# epmd is ours (epmd_up, epmd_release), so the monitor is stopped once a node is up, and for
# a new cluster member once it joined (start_app starts it anew). Failing to stop it is
# only a warning: the broker works either way.
rabbit_epmd_monitor_off() {
  local out
  out=$(rmqctl eval 'supervisor:terminate_child(rabbit_sup, rabbit_epmd_monitor_sup).' 2>&1 </dev/null)
  case "$out" in
    ok | *'{error,not_found}'*) ;; # stopped, or a RabbitMQ without it
    *) warn "warning: $NODE: its epmd monitor still runs (a VM boot a minute): $out" ;;
  esac
}

rabbit_stop() {
  local beam server p
  beam=$(head -n 1 "$R/rabbit.pid" 2>/dev/null)
  server=$(head -n 1 "$R/server.pid" 2>/dev/null)
  if rabbit_alive; then
    say "rabbitmq: stopping"
    # SIGTERM stops the broker gracefully (the same orderly stop as `rabbitmqctl shutdown`,
    # durable queues and persistent messages are kept) in about 1 s; the CLI route costs
    # another 1.5 s (its own VM, then it polls the pid once a second). The launcher script
    # forwards TERM to the VM if the pid file is not written yet.
    if pid_is "$beam" "$RMARK"; then
      kill -TERM "$beam" 2>/dev/null
    else
      kill -TERM "$server" 2>/dev/null
    fi
    if ! wait_gone 30 "$beam" "$server"; then
      warn "rabbitmq: still running 30 s after SIGTERM; killing it (log $R/log/$NODE.log)"
      for p in $beam $server; do pid_is "$p" "$RMARK" && kill -KILL "$p" 2>/dev/null; done
      wait_gone 5 "$beam" "$server"
    fi
  fi
  sweep "$RMARK"
  rm -f "$R/server.pid" "$R/rabbit.pid"
  epmd_release
}
# epmd serves the single node and the cluster's nodes: it stops with the last of them.
epmd_release() {
  local m
  for m in rabbitmq "${CLUSTER_MARKS[@]}"; do [ -n "$(marked_pids "$m")" ] && return 0; done
  if epmd_up; then
    (rabbit_env && exec epmd -port "$EPMD_PORT" -kill) >/dev/null 2>&1 9>&-
  fi
  sweep epmd
}

# ---- the RabbitMQ cluster ----------------------------------------------------------------
# Three nodes herald1@localhost .. herald3@localhost next to the single node (which stays what
# most tests use: one node boots in seconds). Node i (1..3) has its own directory
# $C/node<i>, AMQP port AMQP_PORT+10*i, TLS port +1 of that, distribution port +2 of that,
# the mark rabbit<i>; all share epmd and one Erlang cookie ($C/cookie, copied into each node's
# HOME, which the CLI reads too). The rabbit_* functions above do the work: cnode_ctx points
# their globals at node i, always in a subshell so that the single node's stay as they are.
cnode_ctx() { # i
  local i=$1
  R=$C/node$i NODE=herald$i@localhost RMARK=rabbit$i MANAGEMENT=0
  DIST_PORT=$((AMQP_PORT + 10 * i + 2)) AMQPS_PORT=$((AMQP_PORT + 10 * i + 1))
  AMQP_PORT=$((AMQP_PORT + 10 * i))
}
cnode_amqp_port() { echo $((AMQP_PORT + 10 * $1)); }
cnode_alive() { (cnode_ctx "$1" && rabbit_alive); }
cluster_any_alive() { local i; for i in $(seq $CLUSTER_SIZE); do cnode_alive "$i" && return 0; done; return 1; }
cluster_all_alive() { local i; for i in $(seq $CLUSTER_SIZE); do cnode_alive "$i" || return 1; done; }
cnode_of() { # rabbit<i> or herald<i>@localhost -> i (empty if neither)
  case $1 in rabbit[1-9]) echo "${1#rabbit}" ;; herald[1-9]@localhost) local n=${1#herald}; echo "${n%@localhost}" ;; esac
}
cluster_cookie() { # one cookie for the three nodes and their CLI calls
  mkdir -p "$C" || return 1
  if [ ! -s "$C/cookie" ]; then
    (umask 077 && head -c 16 /dev/urandom | od -An -tx1 | tr -dc '0-9a-f' | tr 'a-f' 'A-Z' >"$C/cookie")
  fi
  local i
  for i in "$@"; do
    mkdir -p "$C/node$i/home" && chmod 700 "$C/node$i/home" || return 1
    cmp -s "$C/cookie" "$C/node$i/home/.erlang.cookie" && continue
    rm -f "$C/node$i/home/.erlang.cookie"
    cp "$C/cookie" "$C/node$i/home/.erlang.cookie" && chmod 400 "$C/node$i/home/.erlang.cookie" || return 1
  done
}
# Start nodes (numbers) side by side, wait for each, then join the ones never joined to the
# first node (rabbitmqctl stop_app, join_cluster, start_app; node 1 is the seed). A node that
# joined once rejoins by itself on a restart (its data directory knows the cluster).
CLUSTER_LAUNCHED=() CLUSTER_RC=0
cluster_launch() { # i... — the VMs boot in the background (cluster_up waits)
  local i
  cluster_cookie "$@" || { warn "error: cannot write the cluster's cookie under $C"; CLUSTER_RC=1; return 1; }
  for i in "$@"; do
    if cnode_alive "$i"; then say "rabbit$i: already running"; continue; fi
    sweep "rabbit$i"
    if (cnode_ctx "$i" && rabbit_launch); then CLUSTER_LAUNCHED+=("$i"); else CLUSTER_RC=1; fi
  done
}
cluster_up() { # t0 i... — after cluster_launch
  local t0=$1 i rc=$CLUSTER_RC seed=herald1@localhost changed=${#CLUSTER_LAUNCHED[@]}
  shift
  local quiet=()
  for i in "${CLUSTER_LAUNCHED[@]}"; do
    if (cnode_ctx "$i" && rabbit_wait "$t0"); then quiet+=("$i"); else rc=1; fi
  done
  CLUSTER_LAUNCHED=()
  for i in "$@"; do
    [ -f "$C/node$i/joined" ] && continue
    cnode_alive "$i" || continue
    if [ "$i" = 1 ]; then touch "$C/node1/joined"; continue; fi
    if ! cnode_alive 1; then warn "error: rabbit$i cannot join the cluster: rabbit1 is down"; rc=1; continue; fi
    say "rabbit$i: joining $seed"
    changed=1
    if (cnode_ctx "$i" && rmqctl stop_app && rmqctl join_cluster "$seed" && rmqctl start_app) \
         </dev/null >"$C/node$i/join.log" 2>&1; then
      touch "$C/node$i/joined"
    else
      warn "error: rabbit$i could not join $seed"
      tail_log "$C/node$i/join.log"
      rc=1
    fi
  done
  # Each node booted now, once it is up and, for a new member, joined (start_app starts the
  # monitor anew): one CLI call each.
  for i in "${quiet[@]}"; do (cnode_ctx "$i" && rabbit_epmd_monitor_off); done
  # (A CLI call costs seconds: only when something changed.)
  [ $rc = 0 ] && [ $# -eq $CLUSTER_SIZE ] && [ "$changed" != 0 ] &&
    say "cluster: $(cluster_members) in $(since "$t0")"
  return $rc
}
cluster_stop() { # i... — orderly stops (SIGTERM), side by side
  local i pids=()
  for i in "$@"; do (cnode_ctx "$i" && rabbit_stop) & pids+=($!); done
  for i in "${pids[@]}"; do wait "$i"; done
  return 0
}
# kill -9 of one node's VM: what a crash or a pulled cable looks like to the others and to
# the clients (no connection.close, no leader hand-over; the quorum elects a new leader).
cluster_kill() { # i
  local beam
  beam=$(head -n 1 "$C/node$1/rabbit.pid" 2>/dev/null)
  if ! pid_is "$beam" "rabbit$1"; then warn "rabbit$1 is not running"; return 1; fi
  say "rabbit$1: kill -9 $beam"
  kill -KILL "$beam"
  wait_gone 10 "$beam"
  # The launcher script and erl_child_setup follow the VM; anything else of this node goes too.
  wait_gone 5 $(head -n 1 "$C/node$1/server.pid" 2>/dev/null)
  sweep "rabbit$1"
  rm -f "$C/node$1/server.pid" "$C/node$1/rabbit.pid"
  epmd_release
}
cluster_ctl() { # rabbitmqctl on the first running node
  local i
  for i in $(seq $CLUSTER_SIZE); do
    if cnode_alive "$i"; then (cnode_ctx "$i" && rmqctl "$@"); return; fi
  done
  warn "no cluster node is running"
  return 1
}
cluster_members() { # "running members of ..." as the first running node sees it
  cluster_ctl cluster_status --formatter json 2>/dev/null </dev/null |
    "$PY" -c 'import json,sys
d=json.load(sys.stdin)
print("members %s, running %s" % (",".join(d.get("disk_nodes",[])), ",".join(d.get("running_nodes",[]))))' 2>/dev/null ||
    echo "members unknown"
}
cluster_status() {
  local i rc=0 port
  for i in $(seq $CLUSTER_SIZE); do
    port=$(cnode_amqp_port "$i")
    if cnode_alive "$i"; then
      printf '  %-9s running  pid %-7s amqp://127.0.0.1:%s  (node herald%s@localhost, dist %s)\n' "rabbit$i" \
        "$(head -n 1 "$C/node$i/rabbit.pid" 2>/dev/null || cat "$C/node$i/server.pid")" "$port" "$i" $((port + 2))
    else
      printf '  %-9s stopped  amqp://127.0.0.1:%s  (node herald%s@localhost)\n' "rabbit$i" "$port" "$i"
      rc=3
    fi
  done
  cluster_any_alive || return $rc
  printf '  %-9s %s\n' cluster "$(cluster_members)"
  # Which node leads each quorum queue (and who the members are): what a node kill moves.
  cluster_ctl list_queues --formatter json name type leader members 2>/dev/null </dev/null |
    "$PY" -c 'import json,sys
for q in json.load(sys.stdin):
    if q.get("type") == "quorum":
        print("  %-9s quorum queue %s: leader %s, members %s" % ("", q["name"], q.get("leader", "?"), ",".join(q.get("members", []))))' 2>/dev/null
  return $rc
}

# ---- PostgreSQL ------------------------------------------------------------------------
as_pg() { # the server refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_start() {
  local t0
  t0=$(now_us)
  mkdir -p "$P" || return 1
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$P"
  chmod 700 "$P"
  if ! (cd / && as_pg test -w "$P"); then
    warn "error: the postgres user cannot write $P: every parent directory of HD_SERVERS_DIR"
    warn "  must be searchable by it (e.g. use /tmp/...)"
    return 1
  fi
  port_free "$PG_PORT" "PostgreSQL" || return 1
  if [ ! -s "$P/data/PG_VERSION" ]; then
    say "postgres: initdb $P/data"
    rm -rf "$P/data"
    if ! (cd "$P" && as_pg "$PG_BIN/initdb" -D "$P/data" -U postgres -A trust -E UTF8 \
          --locale=C.UTF-8 --no-sync) >"$P/initdb.log" 2>&1; then
      warn "error: initdb failed"
      tail_log "$P/initdb.log"
      return 1
    fi
    # A standby of an earlier primary cannot follow this one: the next start makes a new copy.
    rm -f "$SB/basebackup.done"
  fi
  tls_copy_for_pg "$P" || { warn "error: cannot install the TLS key for postgres in $P"; return 1; }
  # Not alive or not ours (checked before calling): stale lock files of a crashed server.
  # PostgreSQL would trust them while the dead postmaster is an unreaped zombie.
  rm -f "$P/data/postmaster.pid" "$P"/.s.PGSQL.*
  say "postgres: starting on 127.0.0.1:$PG_PORT"
  pg_ctl_start postgres "$P" "$PG_PORT" "$t0"
}
# pg_ctl start of one server of ours (the primary or the standby), waited for (-w: it accepts
# connections; a standby, read-only ones), with TLS. name dir port t0 [server options...]
pg_ctl_start() {
  local name=$1 dir=$2 port=$3 t0=$4
  shift 4
  if ! (cd "$dir" && as_pg env "HD_SERVERS_MARK=$DIR:$name" LC_ALL=C.UTF-8 \
        "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 -s \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir $* $(pg_ssl_opts "$dir")" start) \
        </dev/null >>"$dir/pg_ctl.log" 2>&1 9>&-; then
    warn "error: $name did not start"
    tail_log "$dir/pg_ctl.log"
    tail_log "$dir/postgres.log"
    return 1
  fi
  say "$name: ready in $(since "$t0") (pid $(head -n 1 "$dir/data/postmaster.pid"), log $dir/postgres.log)"
}
pg_ctl_stop() { # name dir
  (cd "$2" && as_pg "$PG_BIN/pg_ctl" -D "$2/data" -m fast -w -t 30 -s stop) \
    </dev/null >>"$2/pg_ctl.log" 2>&1 9>&- || warn "$1: pg_ctl stop failed (see $2/pg_ctl.log)"
}
# ssl=on next to plain text on the same port: the client picks with sslmode (verify-full
# and sslrootcert=$HD_TLS_CA_FILE to check the server). Options, not postgresql.conf: the
# standby's copy of the data directory must not point at the primary's key.
pg_ssl_opts() { # dir holding server.crt/.key (tls_copy_for_pg)
  printf -- '-c ssl=on -c ssl_cert_file=%s/server.crt -c ssl_key_file=%s/server.key' "$1" "$1"
}
pg_stop() {
  if pg_alive; then
    say "postgres: stopping"
    pg_ctl_stop postgres "$P"
  fi
  sweep postgres
}

# ---- PostgreSQL standby ----------------------------------------------------------------
pg_sql() { # port sql — one value, empty when the server does not answer
  "$PG_BIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d postgres -XAtq -c "$2" 2>/dev/null </dev/null 9>&-
}
# A streaming replica of the primary: pg_basebackup -R (standby.signal, primary_conninfo with
# application_name herald_standby) through a physical replication slot, so that WAL written
# while the standby is stopped waits for it on the primary and `start standby` catches up.
# The copy is made once (basebackup.done); later starts reuse it.
standby_start() {
  local t0
  t0=$(now_us)
  mkdir -p "$SB" || return 1
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$SB"
  chmod 700 "$SB"
  port_free "$STANDBY_PORT" "PostgreSQL standby" || return 1
  if [ ! -f "$SB/basebackup.done" ]; then
    if ! pg_alive; then
      warn "error: the standby is a copy of the primary: start postgres first ('$SELF up postgres standby')"
      return 1
    fi
    say "standby: pg_basebackup from 127.0.0.1:$PG_PORT"
    rm -rf "$SB/data"
    # A slot of an earlier copy would make -C fail (and keep WAL for nobody).
    pg_sql "$PG_PORT" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                       WHERE slot_name = '$STANDBY_SLOT' AND NOT active" >/dev/null
    if ! (cd "$SB" && as_pg "$PG_BIN/pg_basebackup" -D "$SB/data" -R -X stream -C -S "$STANDBY_SLOT" \
          -c fast --no-sync \
          -d "host=127.0.0.1 port=$PG_PORT user=postgres application_name=herald_standby") \
          </dev/null >"$SB/basebackup.log" 2>&1 9>&-; then
      warn "error: pg_basebackup failed"
      tail_log "$SB/basebackup.log"
      return 1
    fi
    touch "$SB/basebackup.done"
  fi
  tls_copy_for_pg "$SB" || { warn "error: cannot install the TLS key for the standby in $SB"; return 1; }
  rm -f "$SB/data/postmaster.pid" "$SB"/.s.PGSQL.*
  say "standby: starting on 127.0.0.1:$STANDBY_PORT (replica of 127.0.0.1:$PG_PORT)"
  pg_ctl_start standby "$SB" "$STANDBY_PORT" "$t0" -c hot_standby=on
}
standby_stop() {
  if standby_alive; then
    say "standby: stopping"
    pg_ctl_stop standby "$SB"
  fi
  sweep standby
}
standby_lag() { # how far the standby is behind, as the primary sees it (and whether paused)
  local lag paused
  lag=$(pg_sql "$PG_PORT" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint
                             || ' bytes behind, replay_lag ' || coalesce(replay_lag::text, '0')
                           FROM pg_stat_replication WHERE application_name = 'herald_standby'")
  if [ -z "$lag" ]; then
    if pg_alive; then lag="not streaming from the primary"; else lag="primary down"; fi
  fi
  paused=$(pg_sql "$STANDBY_PORT" "SELECT pg_is_wal_replay_paused()")
  [ "$paused" = t ] && lag="$lag, replay PAUSED"
  printf '%s' "$lag"
}

# ---- SMTP sink -------------------------------------------------------------------------
# Two sink processes on one maildir. Plain SMTP on SMTP_PORT: herald's sender tries STARTTLS
# whenever a server offers it and then verifies the certificate, so a sink offering it with
# the harness's private CA would make every test that sends mail configure that CA. The
# STARTTLS sink on SMTP_TLS_PORT presents the harness's server certificate (127.0.0.1,
# localhost). Both carry the smtp mark, so smtp_stop's sweep ends them together.
smtp_start() {
  mkdir -p "$S/maildir" || return 1
  rm -f "$S/smtp.pid"
  smtp_sink_start plain && smtp_sink_start tls
}
# smtp_sink_start plain|tls: one sink; its pid in $S/smtp.pid or $S/smtp-tls.pid, its output
# in the .log beside it.
smtp_sink_start() {
  local t0 pid port=$SMTP_PORT what="SMTP sink" base=smtp tls=()
  t0=$(now_us)
  if [ "$1" = tls ]; then
    port=$SMTP_TLS_PORT what="SMTP STARTTLS sink" base=smtp-tls
    tls=(--tls-cert "$T/server.crt" --tls-key "$T/server.key")
  fi
  port_free "$port" "$what" || return 1
  [ "$1" = tls ] || say "smtp: starting sink on 127.0.0.1:$port"
  (exec setsid env "HD_SERVERS_MARK=$DIR:smtp" "$PY" "$ROOT/scripts/smtp_sink.py" \
    --host 127.0.0.1 --port "$port" --maildir "$S/maildir" "${tls[@]}") \
    </dev/null >"$S/$base.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$S/$base.pid"
  for _ in $(seq 100); do
    port_open "$port" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "$pid" 2>/dev/null || ! port_open "$port"; then
    warn "error: the $what did not start"
    tail_log "$S/$base.log"
    return 1
  fi
  if [ "$1" = tls ]; then
    say "smtp: STARTTLS sink on 127.0.0.1:$port (pid $pid, log $S/$base.log)"
  else
    say "smtp: ready in $(since "$t0") (pid $pid, maildir $S/maildir, log $S/$base.log)"
  fi
}
smtp_stop() {
  smtp_alive && say "smtp: stopping"
  smtp_sink_stop plain
  smtp_sink_stop tls
  sweep smtp
  rm -f "$S/smtp.pid" "$S/smtp-tls.pid"
}
# smtp_sink_stop plain|tls: SIGTERM, SIGKILL after 5 s; nothing when it does not run.
smtp_sink_stop() {
  local pid file=$S/smtp.pid
  [ "$1" = tls ] && file=$S/smtp-tls.pid
  pidfile_is "$file" smtp || return 0
  pid=$(head -n 1 "$file")
  kill -TERM "$pid" 2>/dev/null
  wait_gone 5 "$pid" || kill -KILL "$pid" 2>/dev/null
}

# ---- Redis -----------------------------------------------------------------------------
# The pub/sub bus's server (bus_redis.h). No persistence (save "", appendonly no): pub/sub
# keeps nothing anyway, and a test server should leave nothing behind. The password is made
# once per state directory and lives in files of mode 0600 only (redis.conf, password, env);
# set-proc-title no: redis would otherwise rewrite its argv/environ area, and the mark
# (HD_SERVERS_MARK in /proc/<pid>/environ) is how we find our process.
redis_start() {
  local t0 pid pw
  t0=$(now_us)
  [ -x "$REDIS_BIN" ] || { warn "error: $REDIS_BIN is missing (scripts/deps.sh installs redis-server)"; return 1; }
  mkdir -p "$X" || return 1
  chmod 700 "$X"
  port_free "$REDIS_PORT" "Redis (HD_REDIS_PORT)" || return 1
  if [ ! -s "$X/password" ]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -dc '0-9a-f' >"$X/password") || return 1
  fi
  pw=$(cat "$X/password")
  (umask 077 && printf '%s\n' "# written by scripts/servers.sh" "bind 127.0.0.1" "port $REDIS_PORT" \
    "protected-mode yes" "daemonize no" "set-proc-title no" "dir $X" "logfile $X/redis.log" \
    'save ""' "appendonly no" "requirepass $pw" >"$X/redis.conf") || return 1
  rm -f "$X/redis.pid"
  say "redis: starting on 127.0.0.1:$REDIS_PORT"
  (cd "$X" && exec setsid env "HD_SERVERS_MARK=$DIR:redis" "$REDIS_BIN" "$X/redis.conf") \
    </dev/null >"$X/startup.log" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$X/redis.pid"
  for _ in $(seq 100); do
    port_open "$REDIS_PORT" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if ! kill -0 "$pid" 2>/dev/null || ! port_open "$REDIS_PORT"; then
    warn "error: redis did not start"
    tail_log "$X/startup.log"
    tail_log "$X/redis.log"
    return 1
  fi
  say "redis: ready in $(since "$t0") (pid $pid, log $X/redis.log)"
}
redis_stop() {
  local pid
  if redis_alive; then
    say "redis: stopping"
    pid=$(head -n 1 "$X/redis.pid")
    kill -TERM "$pid" 2>/dev/null   # SIGTERM: redis exits at once (nothing to save)
    wait_gone 10 "$pid" || kill -KILL "$pid" 2>/dev/null
  fi
  sweep redis
  rm -f "$X/redis.pid"
}

# ---- the env file ----------------------------------------------------------------------
write_env() {
  local tmp=$DIR/env.tmp
  {
    echo "# herald test servers, written by $SELF — source it: . $DIR/env"
    printf 'export HD_SERVERS_DIR=%q\n' "$DIR"
    printf 'export HD_SERVERS_CTL=%q\n' "$SELF"
    printf 'export HD_AMQP_PORT=%s HD_RABBIT_DIST_PORT=%s HD_EPMD_PORT=%s HD_PG_PORT=%s HD_SMTP_PORT=%s\n' \
      "$AMQP_PORT" "$DIST_PORT" "$EPMD_PORT" "$PG_PORT" "$SMTP_PORT"
    printf 'export HD_AMQPS_PORT=%s HD_PG_STANDBY_PORT=%s\n' "$AMQPS_PORT" "$STANDBY_PORT"
    printf 'export HD_SMTP_TLS_PORT=%s\n' "$SMTP_TLS_PORT"
    if [ -s "$T/ca.crt" ]; then
      echo "# TLS: the CA of every server's certificate, and an unrelated one that must be refused"
      printf 'export HD_TLS_DIR=%q\n' "$T"
      printf 'export HD_TLS_CA_FILE=%q\n' "$T/ca.crt"
      printf 'export HD_TLS_WRONG_CA_FILE=%q\n' "$T/wrong-ca.crt"
      echo "# signed by that CA but to be refused: expired (2020), and for host wrong.example"
      printf 'export HD_TLS_EXPIRED_CERT=%q HD_TLS_EXPIRED_KEY=%q\n' "$T/expired.crt" "$T/expired.key"
      printf 'export HD_TLS_WRONG_HOST_CERT=%q HD_TLS_WRONG_HOST_KEY=%q\n' "$T/wrong-host.crt" \
        "$T/wrong-host.key"
    fi
    if rabbit_alive; then
      echo "export HD_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
      echo "export HD_AMQPS_URL=amqps://guest:guest@127.0.0.1:$AMQPS_PORT/"
      if [ "$MANAGEMENT" = 1 ]; then
        echo "# the management UI (HD_RABBIT_MANAGEMENT=1): user guest, password guest"
        echo "export HD_RABBIT_MGMT_PORT=$MGMT_PORT HD_RABBIT_MGMT_URL=http://127.0.0.1:$MGMT_PORT/"
      fi
    fi
    if [ -d "$C" ] && cluster_any_alive; then
      # Every node, also one that is down right now (a test kills and restarts them): the
      # clients take the list (HD_AMQP_URL may be comma-separated) and skip dead nodes.
      local i urls=() nodes=()
      echo "# the three-node cluster (servers rabbit1..3): one URL per node, and all of them"
      for i in $(seq $CLUSTER_SIZE); do
        urls+=("amqp://guest:guest@127.0.0.1:$(cnode_amqp_port "$i")/")
        nodes+=("herald$i@localhost")
        echo "export HD_CLUSTER_URL_$i=${urls[-1]} HD_CLUSTER_NODE_$i=${nodes[-1]}"
      done
      echo "export HD_CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")"
      echo "export HD_CLUSTER_NODES=$(IFS=,; echo "${nodes[*]}")"
    fi
    if pg_alive; then
      echo "export HD_PG_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
    fi
    if standby_alive; then
      echo "# a read-only streaming replica of HD_PG_URL"
      echo "export HD_PG_STANDBY_URL=postgresql://postgres@127.0.0.1:$STANDBY_PORT/postgres"
    fi
    if smtp_alive; then
      echo "export HD_SMTP_URL=smtp://127.0.0.1:$SMTP_PORT"
      echo "# the same maildir, STARTTLS offered with the certificate of HD_TLS_CA_FILE"
      echo "export HD_SMTP_TLS_URL=smtp://127.0.0.1:$SMTP_TLS_PORT"
      printf 'export HD_SMTP_MAILDIR=%q\n' "$S/maildir"
    fi
    if redis_alive; then
      printf 'export HD_REDIS_PORT=%s\n' "$REDIS_PORT"
      printf 'export HD_REDIS_URL=redis://:%s@127.0.0.1:%s\n' "$(cat "$X/password")" "$REDIS_PORT"
    fi
  } >"$tmp" && chmod 600 "$tmp" && mv -f "$tmp" "$DIR/env"
}

# ---- commands ---------------------------------------------------------------------------
check_names() {
  local s
  for s in "$@"; do
    case $s in rabbitmq | postgres | standby | smtp | redis | rabbit1 | rabbit2 | rabbit3) ;;
      *) die "unknown server '$s' (rabbitmq, postgres, standby, smtp, redis, cluster, rabbit1..3)" ;; esac
  done
}
# The servers named on a command line: "cluster" is its three nodes, a node name
# (herald2@localhost, as `status` and the env file show it) is its server (rabbit2).
NAMES=()
expand_names() {
  local s i
  NAMES=()
  for s in "$@"; do
    i=$(cnode_of "$s")
    if [ "$s" = cluster ]; then NAMES+=("${CLUSTER_MARKS[@]}")
    elif [ -n "$i" ]; then NAMES+=("rabbit$i")
    else NAMES+=("$s"); fi
  done
}
# What `up` and `run` start without names: every server, and the cluster with
# HD_RABBIT_CLUSTER=1 (or `up --cluster`, `run --cluster`).
default_servers() {
  NAMES=("${ALL_SERVERS[@]}")
  case ${HD_RABBIT_CLUSTER:-0} in 1 | true | yes | on) NAMES+=("${CLUSTER_MARKS[@]}") ;;
    0 | false | no | off | "") ;; *) die "HD_RABBIT_CLUSTER=$HD_RABBIT_CLUSTER is not 0 or 1" ;; esac
}
wants() { local w=$1 s; shift; for s in "$@"; do [ "$s" = "$w" ] && return 0; done; return 1; }

do_up() { # servers... (lock held)
  local t0 rc=0 launched=0 s nothing_before=1
  t0=$(now_us)
  load_config
  any_alive && nothing_before=0
  apply_env_ports
  save_config
  tls_make || return 1   # every server needs it
  local cnodes=() i
  for i in $(seq $CLUSTER_SIZE); do wants "rabbit$i" "$@" && cnodes+=("$i"); done
  # The cluster's VMs boot while the rest starts.
  [ ${#cnodes[@]} -gt 0 ] && cluster_launch "${cnodes[@]}"
  for s in "${ALL_SERVERS[@]}"; do   # in this order, whatever the command line's
    wants "$s" "$@" || continue
    if alive "$s"; then
      say "$s: already running"
      continue
    fi
    sweep "$s"
    case $s in
      rabbitmq) if rabbit_launch; then launched=1; else rc=1; fi ;;
      postgres) pg_start || rc=1 ;;
      standby) standby_start || rc=1 ;;
      smtp) smtp_start || rc=1 ;;
      redis) redis_start || rc=1 ;;
    esac
  done
  if [ ${#cnodes[@]} -gt 0 ]; then cluster_up "$t0" "${cnodes[@]}" || rc=1; fi
  # The broker boots (5-7 s) while PostgreSQL, its standby and the sink start.
  if [ $launched = 1 ]; then rabbit_wait "$t0" && rabbit_epmd_monitor_off || rc=1; fi
  [ $nothing_before = 1 ] && [ ! -f "$DIR/started-by" ] && echo "${STARTED_BY:-up}" >"$DIR/started-by"
  write_env
  if [ $rc = 0 ]; then
    say "up in $(since "$t0"): env file $DIR/env  (. $DIR/env)"
  else
    warn "some servers failed to start (logs under $DIR); '$SELF down' cleans up"
  fi
  return $rc
}
do_stop() { # servers... (lock held)
  load_config
  wants standby "$@" && standby_stop
  wants postgres "$@" && pg_stop
  wants smtp "$@" && smtp_stop
  wants redis "$@" && redis_stop
  wants rabbitmq "$@" && rabbit_stop
  local cnodes=() i
  for i in $(seq $CLUSTER_SIZE); do wants "rabbit$i" "$@" && cnodes+=("$i"); done
  [ ${#cnodes[@]} -gt 0 ] && cluster_stop "${cnodes[@]}"
  [ -f "$DIR/env" ] && write_env   # a stopped server's URL leaves the env file
  return 0
}
do_down() {
  local t0
  t0=$(now_us)
  load_config
  if [ -d "$DIR" ]; then lock; fi
  rabbit_stop &   # the slowest; the others stop meanwhile
  local rpid=$!
  cluster_stop $(seq $CLUSTER_SIZE) &
  local cpid=$!
  standby_stop
  pg_stop
  smtp_stop
  redis_stop
  wait "$rpid"
  wait "$cpid"
  epmd_release   # the parallel stops may each have seen the other still running
  # Only what we made: a mistyped HD_SERVERS_DIR must never cost anyone a directory.
  rm -rf "${DIR:?}/rabbitmq" "$DIR/cluster" "$DIR/postgres" "$DIR/standby" "$DIR/smtp" "$DIR/redis" "$DIR/tls" \
         "$DIR/tls.log" "$DIR/config" "$DIR/env" "$DIR/env.tmp" "$DIR/started-by" "$DIR/.lock"
  unlock
  if [ -d "$DIR" ] && ! rmdir "$DIR" 2>/dev/null; then
    warn "left $DIR in place: it holds files servers.sh did not create"
  fi
  say "down in $(since "$t0")"
}

cmd_up() {
  while :; do
    case ${1:-} in
      --management) export HD_RABBIT_MANAGEMENT=1; shift ;;
      --cluster) export HD_RABBIT_CLUSTER=1; shift ;;
      *) break ;;
    esac
  done
  local want
  if [ $# -gt 0 ]; then expand_names "$@"; else default_servers; fi
  want=("${NAMES[@]}")
  check_names "${want[@]}"
  lock
  do_up "${want[@]}"
  local rc=$?
  unlock
  return $rc
}
cmd_stop() {
  [ $# -gt 0 ] || die "stop what? (rabbitmq, postgres, standby, smtp, redis, cluster, rabbit1..3; 'down' stops everything)"
  expand_names "$@"
  set -- "${NAMES[@]}"
  check_names "$@"
  lock
  do_stop "$@"
  unlock
}
cmd_kill() { # one cluster node, kill -9 (not the single node: its tests restart it)
  [ $# -eq 1 ] || die "kill one cluster node: rabbit1..3 (or its node name herald<i>@localhost)"
  local i
  i=$(cnode_of "$1")
  [ -n "$i" ] && [ "$i" -le $CLUSTER_SIZE ] || die "kill: '$1' is not a cluster node (rabbit1..3)"
  load_config
  lock
  cluster_kill "$i"
  local rc=$?
  unlock
  return $rc
}
cmd_restart() {
  [ $# -gt 0 ] || die "restart what? (rabbitmq, postgres, standby, smtp, redis, cluster, rabbit1..3)"
  expand_names "$@"
  set -- "${NAMES[@]}"
  check_names "$@"
  lock
  do_stop "$@"
  do_up "$@"
  local rc=$?
  unlock
  return $rc
}

RUN_KEEP=()
run_finish() {
  local rc=$? s stop=()
  trap - EXIT INT TERM
  if [ ${#RUN_KEEP[@]} -eq 0 ]; then
    do_down
  else
    for s in "${RUN_ALL[@]}"; do wants "$s" "${RUN_KEEP[@]}" || stop+=("$s"); done
    say "leaving ${RUN_KEEP[*]} running: they were running before this run (use 'down' to stop)"
    if [ ${#stop[@]} -gt 0 ]; then lock; do_stop "${stop[@]}"; unlock; fi
  fi
  exit $rc
}
RUN_ALL=()
cmd_run() {
  [ "${1:-}" = --cluster ] && { export HD_RABBIT_CLUSTER=1; shift; }
  [ "${1:-}" = "--" ] && shift
  default_servers
  RUN_ALL=("${NAMES[@]}")
  [ $# -gt 0 ] || die "usage: servers.sh run -- CMD ARGS..."
  local s owner
  load_config
  # Servers started by an explicit `up` (or by a run still in progress) are left running
  # afterwards; leftovers of a run that died are adopted and stopped like our own.
  owner=$(cat "$DIR/started-by" 2>/dev/null)
  if [[ $owner =~ ^run\ ([0-9]+)$ ]] && ! kill -0 "${BASH_REMATCH[1]}" 2>/dev/null; then
    say "adopting servers left behind by an earlier run (pid ${BASH_REMATCH[1]})"
    rm -f "$DIR/started-by"
  else
    for s in "${RUN_ALL[@]}"; do alive "$s" && RUN_KEEP+=("$s"); done
  fi
  trap run_finish EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  STARTED_BY="run $$" cmd_up "${RUN_ALL[@]}" || exit 1
  set -a
  # shellcheck disable=SC1091
  . "$DIR/env"
  set +a
  "$@"
}

cmd_status() {
  load_config
  local rc=0
  say "state dir $DIR"
  if rabbit_alive; then
    printf '  %-9s running  pid %-7s amqp://127.0.0.1:%s amqps://127.0.0.1:%s  (node %s, epmd %s, dist %s)\n' rabbitmq \
      "$(head -n 1 "$R/rabbit.pid" 2>/dev/null || cat "$R/server.pid")" "$AMQP_PORT" "$AMQPS_PORT" \
      "$NODE" "$EPMD_PORT" "$DIST_PORT"
  else printf '  %-9s stopped\n' rabbitmq; rc=3; fi
  if rabbit_alive && [ "$MANAGEMENT" = 1 ]; then
    printf '  %-9s          http://127.0.0.1:%s/  (management UI, guest / guest)\n' '' "$MGMT_PORT"
  fi
  if pg_alive; then
    printf '  %-9s running  pid %-7s postgresql://127.0.0.1:%s  (ssl=on)\n' postgres \
      "$(head -n 1 "$P/data/postmaster.pid")" "$PG_PORT"
  else printf '  %-9s stopped\n' postgres; rc=3; fi
  if standby_alive; then
    printf '  %-9s running  pid %-7s postgresql://127.0.0.1:%s  (ssl=on, %s)\n' standby \
      "$(head -n 1 "$SB/data/postmaster.pid")" "$STANDBY_PORT" "$(standby_lag)"
  else printf '  %-9s stopped\n' standby; rc=3; fi
  if smtp_alive; then
    printf '  %-9s running  pid %-7s smtp://127.0.0.1:%s  (maildir %s, %s messages)\n' smtp \
      "$(cat "$S/smtp.pid")" "$SMTP_PORT" "$S/maildir" "$(find "$S/maildir" -name '*.eml' | wc -l)"
    if pidfile_is "$S/smtp-tls.pid" smtp; then
      printf '  %-9s running  pid %-7s smtp://127.0.0.1:%s  (STARTTLS, same maildir)\n' smtp-tls \
        "$(cat "$S/smtp-tls.pid")" "$SMTP_TLS_PORT"
    else printf '  %-9s stopped\n' smtp-tls; rc=3; fi
  else printf '  %-9s stopped\n' smtp; rc=3; fi
  if redis_alive; then
    printf '  %-9s running  pid %-7s redis://127.0.0.1:%s  (AUTH: password in %s, no persistence)\n' redis \
      "$(head -n 1 "$X/redis.pid")" "$REDIS_PORT" "$X/password"
  else printf '  %-9s stopped\n' redis; rc=3; fi
  if [ -d "$C" ]; then cluster_status || rc=3; fi
  [ -s "$T/ca.crt" ] && say "TLS CA $T/ca.crt"
  [ -f "$DIR/env" ] && say "env file $DIR/env"
  return $rc
}

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case $cmd in
    up) cmd_up "$@" ;;
    start) [ $# -gt 0 ] || die "start what? (rabbitmq, postgres, standby, smtp, redis, cluster, rabbit1..3; 'up' starts all)"; cmd_up "$@" ;;
    down) [ $# -eq 0 ] || die "down takes no arguments (use 'stop SERVER' for one)"; do_down ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    restart) cmd_restart "$@" ;;
    run) cmd_run "$@" ;;
    status) cmd_status ;;
    env) [ -f "$DIR/env" ] || die "no env file in $DIR: run '$SELF up' first"; cat "$DIR/env" ;;
    rabbitmqctl) load_config; rmqctl "$@" ;;
    cluster-ctl) load_config; cluster_ctl "$@" ;;
    psql) load_config
          PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres PGDATABASE=postgres exec "$PG_BIN/psql" "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) warn "unknown command '$cmd'"; usage >&2; exit 2 ;;
  esac
}

main "$@"
