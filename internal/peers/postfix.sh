#!/usr/bin/env bash
# internal/peers/postfix.sh - the real Postfix that mailroute's delivery tests
# talk to: an MX-style receiver (direct delivery) and an authenticated
# submission smarthost (relay delivery), on loopback. Normally run through
# peers.sh.
#
# Usage: postfix.sh install|start|stop|restart|status
#
# Needs root (apt-get install, Postfix's own privilege separation) but no
# systemd and no syslog. It never reads or writes /etc/postfix/main.cf: the
# whole instance (config, queue, maildirs, log, TLS cert, SASL db) lives under
# $PEERS_DIR/postfix.
#
# Listeners:
#   127.0.0.1:$PF_SMTP_PORT and 127.0.0.2:$PF_SMTP_PORT (2525)
#       MX-style receiver: STARTTLS offered (not required), no AUTH; accepts
#       only $PF_DOMAINS (others: 554 relay access denied); recipient local
#       part reject* -> 550 5.1.1, tempfail* -> 450 4.2.0, repblock* -> 554
#       5.7.1 "blocked using zen.spamhaus.org" (a reputation refusal, for the
#       routes mailroute learns from refusals). Every accepted
#       recipient gets one file in the Maildir $PEERS_DIR/postfix/mail/inbound.
#   127.0.0.1:$PF_SUBMISSION_PORT (5870)
#       submission smarthost: STARTTLS, then SASL AUTH PLAIN/LOGIN/CRAM-MD5
#       (only after STARTTLS); any recipient, but nothing leaves the box:
#       everything is stored in the Maildir $PEERS_DIR/postfix/mail/submitted.
#   127.0.0.1:$PF_SUBMISSIONS_PORT (4650)
#       the same with implicit TLS (465-style).
# SASL user: $PF_USER / $PF_PASS (testuser@example.org / testpass), in a cyrus
# sasldb file, so no auth daemon runs.
# TLS: one self-signed certificate ($PEERS_DIR/postfix/tls/cert.pem) for
# mx.example.org, mx1/mx2.example.org, the other MX names of the test zones,
# localhost, 127.0.0.1 and 127.0.0.2.
#
# Postfix is configured to leave the message alone (no header rewriting, no
# added Message-ID/Date/From, no dropped Bcc/Return-Path headers): what lands
# in the Maildir is what the client sent, with LF line endings and four
# headers prepended; see internal/peertest for the exact shape.
set -euo pipefail

PEERS_DIR=${PEERS_DIR:-/tmp/mailroute-peers}
PF_SMTP_PORT=${PF_SMTP_PORT:-2525}
PF_SMTP_ADDRS=${PF_SMTP_ADDRS:-"127.0.0.1 127.0.0.2"}
PF_SUBMISSION_PORT=${PF_SUBMISSION_PORT:-5870}
PF_SUBMISSIONS_PORT=${PF_SUBMISSIONS_PORT:-4650}
# Every test-zone domain whose MX (or implicit MX) is this Postfix.
PF_DOMAINS=${PF_DOMAINS:-"example.org mx-test.internal mx1down.test cnamemx.test amx.test mixed.test"}
PF_USER=${PF_USER:-testuser@example.org}
PF_PASS=${PF_PASS:-testpass}
PF_HOSTNAME=${PF_HOSTNAME:-mx.example.org}
PF_MSG_LIMIT=${PF_MSG_LIMIT:-26214400}   # bytes, advertised in EHLO SIZE
PF_CERT_NAMES="$PF_HOSTNAME mx1.example.org mx2.example.org mail.mx-test.internal live.mx1down.test mail.mixed.test amx.test localhost"
PF_CERT_IPS="127.0.0.1 127.0.0.2"
# virtual(8) writes the Maildirs as this uid/gid (must be >= 100). Under sudo
# it is the invoking user, so that user's tests can read the mail; else nobody.
if [ -n "${SUDO_UID:-}" ] && [ "${SUDO_UID}" -ge 100 ] 2>/dev/null; then
  PF_MAIL_UID=${PF_MAIL_UID:-$SUDO_UID}; PF_MAIL_GID=${PF_MAIL_GID:-${SUDO_GID:-$SUDO_UID}}
else
  PF_MAIL_UID=${PF_MAIL_UID:-65534}; PF_MAIL_GID=${PF_MAIL_GID:-65534}
fi

D=$PEERS_DIR/postfix
C=$D/etc

log() { echo "peers/postfix: $*" >&2; }

installed() {
  command -v postfix >/dev/null && command -v saslpasswd2 >/dev/null \
    && command -v openssl >/dev/null \
    && [ -n "$(ls /usr/lib/*/sasl2/libplain.so 2>/dev/null)" ] \
    && [ -n "$(ls /usr/lib/*/sasl2/libsasldb.so 2>/dev/null)" ]
}

do_install() {
  installed && return 0
  [ "$(id -u)" = 0 ] || { log "Postfix is not installed and installing needs root"; return 1; }
  local pk="postfix libsasl2-modules sasl2-bin openssl"
  log "installing $pk (apt)"
  export DEBIAN_FRONTEND=noninteractive
  # "No configuration": the package must not set up (or start) a system MTA.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' 2>/dev/null | head -1)" ]; then
    apt-get update -q >/dev/null
  fi
  # shellcheck disable=SC2086
  if ! apt-get install -y -q --no-install-recommends $pk >/dev/null; then
    log "apt-get install failed; updating the package lists and retrying"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $pk >/dev/null
  fi
  installed || { log "install finished but postfix/sasl modules are still missing"; return 1; }
}

make_cert() {
  local san="" n
  for n in $PF_CERT_NAMES; do san="$san,DNS:$n"; done
  for n in $PF_CERT_IPS; do san="$san,IP:$n"; done
  san=${san#,}
  # Reuse the certificate while its names are the same (tests may pin it).
  if [ -s "$D/tls/cert.pem" ] && [ "$(cat "$D/tls/san" 2>/dev/null)" = "$san" ]; then return 0; fi
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$PF_HOSTNAME" \
    -addext "subjectAltName=$san" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
    -addext "extendedKeyUsage=serverAuth" \
    -keyout "$D/tls/key.pem" -out "$D/tls/cert.pem" 2>/dev/null
  chmod 600 "$D/tls/key.pem"; chmod 644 "$D/tls/cert.pem"
  echo "$san" > "$D/tls/san"
}

configure() {
  mkdir -p "$C/sasl" "$D/queue" "$D/data" "$D/mail" "$D/log" "$D/tls"
  # Postfix insists that the queue dir is root-owned and the data dir postfix-owned.
  chown root:root "$D/queue"; chmod 755 "$PEERS_DIR" "$D" "$D/queue"
  chown postfix:postfix "$D/data"
  # A fresh start begins with empty Maildirs; virtual(8) creates them.
  rm -rf "$D/mail/inbound" "$D/mail/submitted"
  chown "$PF_MAIL_UID:$PF_MAIL_GID" "$D/mail"; chmod 755 "$D/mail"
  : > "$D/log/maillog"
  make_cert

  cat > "$C/main.cf" <<EOF
# generated by internal/peers/postfix.sh
compatibility_level = 3.6
queue_directory = $D/queue
data_directory = $D/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = $PF_HOSTNAME
mydomain = example.org
myorigin = \$myhostname
mydestination =
mynetworks =
# the listeners bind the explicit addresses in master.cf; inet_interfaces
# cannot name 127.0.0.2 (Postfix wants an address configured on an interface)
inet_interfaces = loopback-only
inet_protocols = ipv4
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
# never do DNS, never send anything off the box
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
default_transport = virtual
relay_transport = virtual
local_transport = virtual
# keep the message as the client sent it: no header rewriting for "local"
# clients (the default treats 127.0.0.1 as local and adds Message-ID, Date,
# From, To); on Postfix >= 3.8 also keep Bcc/Return-Path/Content-Length headers
local_header_rewrite_clients =
always_add_missing_headers = no
$(if postconf -d drop_headers >/dev/null 2>&1 && ! postconf -d drop_headers 2>&1 | grep -q unknown; then echo "drop_headers ="; fi)
# storage: one catch-all Maildir per listener (the trailing / means Maildir)
virtual_mailbox_domains = $PF_DOMAINS
virtual_mailbox_base = $D/mail
virtual_mailbox_maps = static:inbound/
virtual_uid_maps = static:$PF_MAIL_UID
virtual_gid_maps = static:$PF_MAIL_GID
virtual_mailbox_limit = 0
message_size_limit = $PF_MSG_LIMIT
# receiver policy (port $PF_SMTP_PORT)
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access regexp:$C/recipient_access
disable_vrfy_command = yes
smtpd_client_connection_rate_limit = 0
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
# TLS (self-signed)
smtpd_tls_cert_file = $D/tls/cert.pem
smtpd_tls_key_file = $D/tls/key.pem
smtpd_tls_security_level = may
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
# SASL (cyrus sasldb, no daemon), enabled per listener in master.cf
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $C/sasl
smtpd_sasl_local_domain = example.org
broken_sasl_auth_clients = no
# logging without syslog
maillog_file = $D/log/maillog
maillog_file_prefixes = $D
EOF
  cat > "$C/recipient_access" <<'EOF'
/^reject[^@]*@/    550 5.1.1 test: user unknown
/^tempfail[^@]*@/  450 4.2.0 test: try again later
/^repblock[^@]*@/  554 5.7.1 test: Service unavailable; Client host blocked using zen.spamhaus.org
EOF
  cat > "$C/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN CRAM-MD5
sasldb_path: $D/sasldb2
EOF
  local sub_opts="
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o smtpd_recipient_restrictions=
  -o content_filter=submitted:sink"
  {
    echo "# generated by internal/peers/postfix.sh"
    for a in $PF_SMTP_ADDRS; do
      echo "$a:$PF_SMTP_PORT inet n - n - - smtpd"
      echo "  -o syslog_name=postfix-peer/smtp"
    done
    cat <<EOF
127.0.0.1:$PF_SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix-peer/submission$sub_opts
127.0.0.1:$PF_SUBMISSIONS_PORT inet n - n - - smtpd
  -o syslog_name=postfix-peer/submissions
  -o smtpd_tls_wrappermode=yes$sub_opts
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
submitted unix  -       n       n       -       -       virtual
  -o virtual_mailbox_maps=static:submitted/
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
  } > "$C/master.cf"
  # SASL user db, readable by smtpd (which runs as postfix).
  rm -f "$D/sasldb2"
  local u=${PF_USER%@*} realm=example.org
  [ "$u" != "$PF_USER" ] && realm=${PF_USER#*@}
  echo -n "$PF_PASS" | saslpasswd2 -p -c -f "$D/sasldb2" -u "$realm" "$u"
  chown root:postfix "$D/sasldb2"; chmod 640 "$D/sasldb2"
}

# stamp identifies the configuration a running instance was started with, so
# `start` restarts it when this script or its settings changed.
stamp() {
  { cat "${BASH_SOURCE[0]}"
    echo "$PEERS_DIR $PF_SMTP_PORT $PF_SMTP_ADDRS $PF_SUBMISSION_PORT $PF_SUBMISSIONS_PORT"
    echo "$PF_DOMAINS $PF_USER $PF_PASS $PF_HOSTNAME $PF_MSG_LIMIT $PF_MAIL_UID $PF_MAIL_GID"
  } | sha256sum | cut -c1-16
}

# is_running: Postfix says so and its master is not a zombie (a killed
# master may linger unreaped, and `postfix status` only does kill -0).
is_running() {
  [ -f "$C/main.cf" ] && postfix -c "$C" status >/dev/null 2>&1 || return 1
  local p st
  p=$(tr -d ' ' < "$D/queue/pid/master.pid" 2>/dev/null) || return 1
  st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

wait_port() {
  local a=$1 p=$2
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$a/$p") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$a:$p did not open; see $D/log/maillog"; tail -20 "$D/log/maillog" >&2; return 1
}

do_start() {
  do_install
  local s; s=$(stamp)
  if is_running; then
    if [ "$(cat "$D/stamp" 2>/dev/null)" = "$s" ]; then log "already running"; return 0; fi
    log "configuration changed, restarting"
    do_stop
  fi
  local t0=${EPOCHREALTIME/./}
  configure
  # A master killed without `postfix stop` leaves its pid file behind, and a
  # zombie behind that pid would make `postfix start` refuse to start.
  rm -f "$D/queue/pid/master.pid"
  postfix -c "$C" check
  postfix -c "$C" start 2>>"$D/log/start.log" || { cat "$D/log/start.log" >&2; return 1; }
  local a
  for a in $PF_SMTP_ADDRS; do wait_port "$a" "$PF_SMTP_PORT"; done
  wait_port 127.0.0.1 "$PF_SUBMISSION_PORT"; wait_port 127.0.0.1 "$PF_SUBMISSIONS_PORT"
  # The ports answer, but is it our master (and not another server holding a
  # port, with ours dead on "Address already in use")?
  sleep 0.2
  if ! is_running || grep -q 'fatal:' "$D/log/maillog"; then
    log "Postfix did not start cleanly; see $D/log/maillog:"; grep -E 'fatal|error' "$D/log/maillog" | tail -10 >&2
    return 1
  fi
  echo "$s" > "$D/stamp"
  log "up in $(( (${EPOCHREALTIME/./} - t0) / 1000 )) ms: smtp port $PF_SMTP_PORT on $PF_SMTP_ADDRS, submission 127.0.0.1:$PF_SUBMISSION_PORT, submissions 127.0.0.1:$PF_SUBMISSIONS_PORT; mail in $D/mail; log $D/log/maillog"
}

do_stop() {
  [ -f "$C/main.cf" ] || { log "not configured"; return 0; }
  if is_running; then
    postfix -c "$C" stop 2>/dev/null || true
    local pidf=$D/queue/pid/master.pid
    for _ in $(seq 1 50); do is_running || break; sleep 0.1; done
    if is_running && [ -f "$pidf" ]; then kill -9 "$(tr -d ' ' < "$pidf")" 2>/dev/null || true; fi
  fi
  rm -f "$D/stamp"
  log "stopped"
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status)
    if is_running; then echo "postfix: running (smtp :$PF_SMTP_PORT on $PF_SMTP_ADDRS, submission :$PF_SUBMISSION_PORT, submissions :$PF_SUBMISSIONS_PORT)"
    else echo "postfix: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|restart|status" >&2; exit 2 ;;
esac
