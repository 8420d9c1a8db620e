# scripts/lib/services.sh — start, watch and stop herald's services from bash.
#
# Sourced (never run) by scripts/demo.sh and tests/integration/test_e2e.sh:
#
#   . "$SOURCE_DIR/scripts/lib/services.sh"
#   svc_init "$BUILD_DIR" "$SOURCE_DIR"        # a private temp dir for databases and logs
#   trap svc_cleanup EXIT                      # whatever happens, nothing is left running
#   svc_start notifications                    # waits for GET /health = 200
#   svc_start users                            # with HD_AMQP_URL: its relay runs in-process
#   curl "$(svc_url users)/users" ...
#   svc_stop users && svc_stop notifications   # SIGTERM; fails unless the exit status is 0
#
# Every service runs with its working directory in the temp dir (so no stray ./.env is
# read), a SQLite database there, a port the kernel picks (port 0: the "listening" log line
# says which), and its JSON log appended to $SVC_DIR/<name>.log. Settings passed as
# VAR=value after the name override the defaults below; anything else (HD_AMQP_URL,
# HD_SMTP_URL, HD_LOG_LEVEL, ...) comes from the caller's environment.
#
#   service        binary                defaults
#   users          herald-users          HD_USERS_LISTEN=127.0.0.1:0
#                                        HD_DATABASE_URL=sqlite://$SVC_DIR/users.db
#                                        HD_USERS_ADMIN_TOKEN=$SVC_ADMIN_TOKEN
#   notifications  herald-notifications  HD_NOTIFICATIONS_LISTEN=127.0.0.1:0
#                                        HD_DATABASE_URL=sqlite://$SVC_DIR/notifications.db
#                                        HD_TEMPLATES_DIR=$SOURCE_DIR/templates
#                                        HD_NOTIFICATIONS_API_TOKEN=$SVC_NOTIF_TOKEN
#                                        (its API answers 401 without it: call it with
#                                        curl -H "$(svc_notif_auth)" ...)
#   relay          herald-relay          HD_DATABASE_URL=sqlite://$SVC_DIR/users.db (the users
#                                        service's outbox); ready at its "relay started" line
#
# Ready means: users and notifications answer GET /health with 200 (for notifications that
# is after it declared the "users" exchange, its queue and the bindings, and started to
# consume), the relay has logged "relay started". A service that exits or is not ready
# within $SVC_START_TIMEOUT seconds (default 20) fails the start and its log is printed.
#
# A service is a child of the shell that called svc_start, which is what lets svc_stop
# read its exit status: call svc_start and svc_stop directly, never inside $( ) or a pipe.
#
# The mail helpers at the end read the SMTP sink's maildir ($HD_SMTP_MAILDIR; one file per
# mail: X-Envelope-From/To lines, then the raw MIME message) with python3's email module.

SVC_START_TIMEOUT=${SVC_START_TIMEOUT:-20}
SVC_STOP_TIMEOUT=${SVC_STOP_TIMEOUT:-20}
declare -gA SVC_PID=() SVC_PORT=() SVC_LOGSTART=()

# svc_init BUILD_DIR SOURCE_DIR: binaries from BUILD_DIR (or $HD_BIN_DIR), a fresh temp dir.
svc_init() {
  SVC_BIN=$(cd "${HD_BIN_DIR:-$1}" && pwd) || return 1
  SVC_SRC=$(cd "$2" && pwd) || return 1
  SVC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/herald-svc-XXXXXX") || return 1
  SVC_ADMIN_TOKEN=${SVC_ADMIN_TOKEN:-admin-$(od -An -tx1 -N16 /dev/urandom | tr -d " \n")} # 32+ characters
  # The notifications API's bearer token: 32 characters at least, random for each run.
  SVC_NOTIF_TOKEN=${SVC_NOTIF_TOKEN:-notif-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')}
  # The sink's files are named <epoch-ns>-<n>.eml: the mail helpers skip older ones, so a
  # maildir shared with earlier tests costs nothing to search.
  SVC_MAIL_SINCE=$(date +%s%N)
  local b
  for b in herald-users herald-notifications herald-relay; do
    [ -x "$SVC_BIN/$b" ] || { echo "services: $SVC_BIN/$b is not built" >&2; return 1; }
  done
}

svc_log() { echo "$SVC_DIR/$1.log"; }
svc_pid() { echo "${SVC_PID[$1]:-}"; }
svc_url() { echo "http://127.0.0.1:${SVC_PORT[$1]}"; }
# The header that opens the notifications API: curl -H "$(svc_notif_auth)" ...
svc_notif_auth() { echo "Authorization: Bearer $SVC_NOTIF_TOKEN"; }

# True while PID runs (a zombie — exited, not yet reaped by wait — does not count).
svc__alive() {
  local st
  st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# The lines NAME logged since its last start.
svc__newlog() { tail -n +"$((${SVC_LOGSTART[$1]:-0} + 1))" "$(svc_log "$1")"; }

# svc_start NAME [VAR=value ...]
svc_start() {
  local name=$1; shift
  local bin defaults=()
  case $name in
    users)
      bin=herald-users
      defaults=(HD_USERS_LISTEN=127.0.0.1:0 "HD_DATABASE_URL=sqlite://$SVC_DIR/users.db"
                "HD_USERS_ADMIN_TOKEN=$SVC_ADMIN_TOKEN") ;;
    notifications)
      bin=herald-notifications
      defaults=(HD_NOTIFICATIONS_LISTEN=127.0.0.1:0
                "HD_DATABASE_URL=sqlite://$SVC_DIR/notifications.db"
                "HD_TEMPLATES_DIR=$SVC_SRC/templates"
                "HD_NOTIFICATIONS_API_TOKEN=$SVC_NOTIF_TOKEN") ;;
    relay)
      bin=herald-relay
      defaults=("HD_DATABASE_URL=sqlite://$SVC_DIR/users.db") ;;
    *) echo "services: unknown service '$name' (users, notifications, relay)" >&2; return 1 ;;
  esac
  if [ -n "${SVC_PID[$name]:-}" ] && svc__alive "${SVC_PID[$name]}"; then
    echo "services: $name is already running (pid ${SVC_PID[$name]})" >&2
    return 1
  fi
  local log; log=$(svc_log "$name")
  touch "$log"
  SVC_LOGSTART[$name]=$(wc -l <"$log")
  (cd "$SVC_DIR" && exec env "${defaults[@]}" "$@" "$SVC_BIN/$bin" 2>>"$log") &
  SVC_PID[$name]=$!
  SVC_PORT[$name]=
  local pid=$! deadline=$((SECONDS + SVC_START_TIMEOUT))
  while [ $SECONDS -le $deadline ]; do
    if ! svc__alive "$pid"; then
      wait "$pid" 2>/dev/null
      echo "services: $name exited with status $? while starting" >&2
      svc_dump_log "$name"
      SVC_PID[$name]=
      return 1
    fi
    if [ "$name" = relay ]; then
      svc__newlog relay | grep -q '"message":"relay started"' && return 0
    else
      if [ -z "${SVC_PORT[$name]}" ]; then
        SVC_PORT[$name]=$(svc__newlog "$name" | grep '"message":"listening"' | head -n 1 |
                            grep -o '"port":"\?[0-9]*' | grep -o '[0-9]*$')
      fi
      if [ -n "${SVC_PORT[$name]}" ] &&
         [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$(svc_url "$name")/health")" = 200 ]; then
        return 0
      fi
    fi
    sleep 0.1
  done
  echo "services: $name not ready after ${SVC_START_TIMEOUT}s" >&2
  svc_dump_log "$name"
  return 1
}

# svc_stop NAME: SIGTERM, wait up to $SVC_STOP_TIMEOUT s; 0 only when it exited with 0.
# The exit status is also left in SVC_RC.
svc_stop() {
  local name=$1 pid=${SVC_PID[$1]:-}
  SVC_RC=
  [ -n "$pid" ] || { echo "services: $name is not running" >&2; return 1; }
  kill -TERM "$pid" 2>/dev/null
  local deadline=$((SECONDS + SVC_STOP_TIMEOUT))
  while svc__alive "$pid" && [ $SECONDS -le $deadline ]; do sleep 0.05; done
  if svc__alive "$pid"; then
    echo "services: $name did not stop within ${SVC_STOP_TIMEOUT}s of SIGTERM: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  SVC_RC=$?
  SVC_PID[$name]=
  if [ "$SVC_RC" -ne 0 ]; then
    echo "services: $name exited with status $SVC_RC after SIGTERM" >&2
    svc_dump_log "$name"
    return 1
  fi
  return 0
}

# svc_kill NAME: SIGKILL, as a crash would (no clean-up of any kind in the service).
svc_kill() {
  local pid=${SVC_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  SVC_PID[$1]=
}

# svc_dump_log NAME [LINES]: the end of NAME's log, on stderr.
svc_dump_log() {
  local log; log=$(svc_log "$1")
  [ -s "$log" ] || { echo "---- $1: no log" >&2; return 0; }
  echo "---- last ${2:-40} lines of $log" >&2
  tail -n "${2:-40}" "$log" >&2
  echo "----" >&2
}

svc_dump_logs() {
  local n
  for n in notifications users relay; do
    [ -e "$(svc_log "$n")" ] && svc_dump_log "$n" "${1:-40}"
  done
  return 0
}

# svc_cleanup: for trap EXIT. SIGKILLs whatever is still running (a clean stop is svc_stop's
# job: reaching this with a service alive means the caller failed), then removes the temp
# dir unless SVC_KEEP is set (it is printed then).
svc_cleanup() {
  local n
  for n in "${!SVC_PID[@]}"; do
    [ -n "${SVC_PID[$n]}" ] && svc_kill "$n"
  done
  [ -n "${SVC_DIR:-}" ] || return 0
  # The secrets check (scripts/check_secrets_in_logs.sh) scans the logs of every test run.
  if [ -n "${HD_TEST_LOG_DIR:-}" ] && mkdir -p "$HD_TEST_LOG_DIR" 2>/dev/null; then
    for n in "$SVC_DIR"/*.log; do
      [ -f "$n" ] && cp "$n" "$HD_TEST_LOG_DIR/svc-$(basename "$SVC_DIR")-$(basename "$n")"
    done
  fi
  if [ -n "${SVC_KEEP:-}" ]; then
    echo "services: kept $SVC_DIR" >&2
  else
    rm -rf "$SVC_DIR"
  fi
}

# ---- the SMTP sink's maildir ---------------------------------------------------------------

# svc_mail_files TO [SUBJECT_PREFIX]: the mails to TO (an envelope recipient), oldest first,
# whose Subject starts with SUBJECT_PREFIX. One path a line.
svc_mail_files() {
  svc__mailpy list "$@"
}

# svc_mail_wait TO SUBJECT_PREFIX [COUNT] [TIMEOUT_S]: wait until at least COUNT (1) such
# mails are there (up to TIMEOUT_S, 20 s); print the path of the newest. 1 on timeout.
svc_mail_wait() {
  local to=$1 subject=$2 count=${3:-1} deadline=$((SECONDS + ${4:-20})) files
  while :; do
    files=$(svc_mail_files "$to" "$subject")
    if [ -n "$files" ] && [ "$(printf '%s\n' "$files" | wc -l)" -ge "$count" ]; then
      printf '%s\n' "$files" | tail -n 1
      return 0
    fi
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

# svc_mail_count RCPT_PREFIX [SUBJECT_PREFIX]: "address count" for every recipient whose
# address starts with RCPT_PREFIX, one a line, sorted by address.
svc_mail_count() { svc__mailpy count "$@"; }

# svc_mail_ms FILE SINCE_NS: milliseconds from SINCE_NS (date +%s%N) to the mail's arrival at
# the sink (its file name is the arrival time in ns).
svc_mail_ms() { local ns=${1##*/}; ns=${ns%%-*}; echo $(( (ns - $2) / 1000000 )); }

# svc_mail_show FILE: the headers a person reads, then the text part decoded.
svc_mail_show() { svc__mailpy show "$1"; }
# svc_mail_header FILE NAME: one header's value.
svc_mail_header() { svc__mailpy header "$1" "$2"; }
# svc_mail_link FILE: the first http(s) link of the text part (quoted-printable decoded).
svc_mail_link() { svc__mailpy link "$1"; }

svc__mailpy() {
  python3 - "$HD_SMTP_MAILDIR" "${SVC_MAIL_SINCE:-0}" "$@" <<'PY'
import email, email.policy, os, re, sys

maildir, since, cmd, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def files():
    """The sink's mails since svc_init, oldest first."""
    out = []
    for name in os.listdir(maildir):
        if not name.endswith(".eml") or name.startswith("."):
            continue
        try:
            ns = int(name.split("-", 1)[0])
        except ValueError:
            continue
        if ns >= since:
            out.append((ns, name))
    return [os.path.join(maildir, n) for _, n in sorted(out)]

def envelope(path):
    """The recipients (the sink's X-Envelope-To lines, first in the file) and the message's
    bytes after them."""
    with open(path, "rb") as f:
        body = f.read()
    rcpts = []
    while body.startswith(b"X-Envelope-"):
        line, _, body = body.partition(b"\n")
        line = line.rstrip(b"\r").decode("utf-8", "replace")
        if line.startswith("X-Envelope-To: "):
            rcpts.append(line[len("X-Envelope-To: "):].strip().lower())
    return rcpts, body

def parse(body):
    return email.message_from_bytes(body, policy=email.policy.default)

def load(path):
    rcpts, body = envelope(path)
    return rcpts, parse(body)

def text_of(msg):
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""

def matching(want, subject):
    """(path, recipient) of every mail to a recipient accepted by want(), with the subject."""
    for path in files():
        try:
            rcpts, body = envelope(path)
        except OSError:
            continue  # removed meanwhile
        hits = [r for r in rcpts if want(r)]
        if hits and str(parse(body).get("Subject", "")).startswith(subject):
            for r in hits:
                yield path, r

if cmd == "list":
    to = args[0].lower()
    for path, _ in matching(lambda r: r == to, args[1] if len(args) > 1 else ""):
        print(path)
elif cmd == "count":
    prefix, counts = args[0].lower(), {}
    for _, r in matching(lambda r: r.startswith(prefix), args[1] if len(args) > 1 else ""):
        counts[r] = counts.get(r, 0) + 1
    for r in sorted(counts):
        print(r, counts[r])
elif cmd == "show":
    rcpts, msg = load(args[0])
    for h in ("From", "To", "Subject", "Date", "Message-ID", "X-Correlation-Id"):
        if msg.get(h) is not None:
            print("%s: %s" % (h, msg[h]))
    kinds = [p.get_content_type() for p in msg.walk() if not p.is_multipart()]
    print("(parts: %s)" % ", ".join(kinds))
    print()
    print(text_of(msg).rstrip("\n"))
elif cmd == "header":
    rcpts, msg = load(args[0])
    print(msg.get(args[1], ""))
elif cmd == "link":
    rcpts, msg = load(args[0])
    m = re.search(r"https?://\S+", text_of(msg))
    if not m:
        sys.exit(1)
    print(m.group(0))
PY
}
