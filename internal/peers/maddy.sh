#!/usr/bin/env bash
# internal/peers/maddy.sh - maddy (a Go mail server) as a second, independent
# submission smarthost for mailroute's relay tests, on loopback. Normally run
# through peers.sh. Adapted from the shared maddy recipe (maddy-peer.sh),
# without its MX receiver: only the submission endpoints are served here.
#
# Usage: maddy.sh install|start|stop|restart|status
#
# maddy is built from source with `go` through the module proxy and cached as
# $PEERS_DIR/bin/maddy-$MADDY_VERSION, so only the first start on a machine
# pays for the build (a couple of minutes: SQLite is compiled with cgo when a
# C compiler is there, else the pure-Go SQLite is used).
#
# Listeners:
#   127.0.0.1:$MADDY_SUBMISSION_PORT (5871)
#       STARTTLS, then AUTH (only after TLS). maddy v0.8.1 advertises only
#       PLAIN (LOGIN is accepted when sent anyway, sasl_login); a wrong
#       password gets "454 4.7.0 Temporary authentication failure", not 535.
#       Any recipient domain; nothing is relayed: every accepted message is
#       stored (below).
#   127.0.0.1:$MADDY_SUBMISSIONS_PORT (4651)
#       the same with implicit TLS (465-style).
# User: $MADDY_USER / $MADDY_PASS (testuser@example.org / testpass, the same
# as Postfix's smarthost), bcrypt-hashed in a pass_table file.
# TLS: a self-signed certificate ($PEERS_DIR/maddy/tls/cert.pem) for
# mx.example.org, localhost and 127.0.0.1.
# DNS: this configuration makes maddy look nothing up (submission does not
# even resolve the client's name); should it ever, --debug.dnsoverride (a
# debugflags build) sends it to the peers' CoreDNS ($MADDY_DNS), never to
# the machine's resolver.
#
# Stored mail: $PEERS_DIR/maddy/store/submitted, one file per message (not
# per recipient), CRLF and header fields kept as sent, with fields prepended:
# imapsql's "Delivered-To: catchall" and "Return-Path: <sender>", the
# envelope as "X-Envelope-From: <sender>" and "X-Envelope-To: rcpt1,rcpt2"
# (written by a check command, since maddy itself records no recipient;
# domains lower-cased) and maddy's "Received: by mx.example.org
# (envelope-sender <sender>) with ESMTPS id ...; date". Submission also adds
# Date and Message-ID when the message has none, and refuses (554) a message
# without a valid From or with a line over 4,000 octets. internal/peertest
# (MaddyMail) parses these files and documents the exact shape. A fresh
# start empties the store.
#
# Env: PEERS_DIR (/tmp/mailroute-peers)
#      MADDY_SUBMISSION_PORT (5871)  MADDY_SUBMISSIONS_PORT (4651)
#      MADDY_USER (testuser@example.org)  MADDY_PASS (testpass)
#      MADDY_DNS ($DNS_ADDR:$DNS_PORT, 127.0.0.1:5353)
#      MADDY_VERSION (v0.8.1)  MADDY_BIN (default: the cached build)
set -euo pipefail

PEERS_DIR=${PEERS_DIR:-/tmp/mailroute-peers}
MADDY_SUBMISSION_PORT=${MADDY_SUBMISSION_PORT:-5871}
MADDY_SUBMISSIONS_PORT=${MADDY_SUBMISSIONS_PORT:-4651}
MADDY_USER=${MADDY_USER:-testuser@example.org}
MADDY_PASS=${MADDY_PASS:-testpass}
MADDY_DNS=${MADDY_DNS:-${DNS_ADDR:-127.0.0.1}:${DNS_PORT:-5353}}
MADDY_VERSION=${MADDY_VERSION:-v0.8.1}
MADDY_BIN=${MADDY_BIN:-$PEERS_DIR/bin/maddy-$MADDY_VERSION}
MADDY_HOSTNAME=mx.example.org
D=$PEERS_DIR/maddy

log() { echo "peers/maddy: $*" >&2; }
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

do_install() {
  [ -x "$MADDY_BIN" ] && return 0
  command -v go >/dev/null || { log "go not found in PATH"; return 1; }
  local B=$PEERS_DIR/build/maddy t0=$SECONDS cgo=0
  command -v "${CC:-cc}" >/dev/null && cgo=1
  log "building maddy $MADDY_VERSION with go, CGO_ENABLED=$cgo (first time only; takes minutes)"
  rm -rf "$B"; mkdir -p "$B" "$(dirname "$MADDY_BIN")"
  # A throwaway module of its own, outside the repository: its go.mod/go.sum
  # never touch mailroute's.
  (
    cd "$B"
    export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=$cgo
    go mod init peers/maddy-build >/dev/null 2>&1
    go get -tool "github.com/foxcpp/maddy/cmd/maddy@$MADDY_VERSION" >/dev/null 2>&1 \
      || go get -tool "github.com/foxcpp/maddy/cmd/maddy@$MADDY_VERSION"
    # maddy's go.mod replaces go-smtp, go-imap and libdns-gandi with its
    # forks; replace directives of a dependency are ignored, so copy them
    # (without them the build fails).
    grep '^replace' "$(go env GOMODCACHE)/cache/download/github.com/foxcpp/maddy/@v/$MADDY_VERSION.mod" >> go.mod
    go mod tidy >/dev/null 2>&1 || go mod tidy
    # debugflags: --debug.dnsoverride, to point maddy's DNS at CoreDNS.
    go build -trimpath -tags debugflags -o "$MADDY_BIN.tmp" github.com/foxcpp/maddy/cmd/maddy
  )
  mv -f "$MADDY_BIN.tmp" "$MADDY_BIN"
  log "built $MADDY_BIN in $((SECONDS - t0))s"
}

# configure writes maddy.conf and the password table, and starts from an
# empty store with its one catch-all account.
configure() {
  rm -rf "$D/state" "$D/store"
  mkdir -p "$D/state" "$D/run" "$D/tls" "$D/store"
  # Reuse the certificate (tests may pin it).
  if [ ! -s "$D/tls/cert.pem" ] || [ ! -s "$D/tls/key.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$MADDY_HOSTNAME" \
      -addext "subjectAltName=DNS:$MADDY_HOSTNAME,DNS:localhost,IP:127.0.0.1" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
      -addext "extendedKeyUsage=serverAuth" \
      -keyout "$D/tls/key.pem" -out "$D/tls/cert.pem" 2>/dev/null
    chmod 600 "$D/tls/key.pem"; chmod 644 "$D/tls/cert.pem"
  fi
  printf '%s: %s\n' "$MADDY_USER" "$("$MADDY_BIN" hash -p "$MADDY_PASS")" > "$D/passwd"
  chmod 600 "$D/passwd"
  # maddy records no envelope recipient in what it stores (imapsql's
  # Delivered-To is the account, "catchall"): a check command prints the
  # envelope as header fields, which maddy prepends. It drains the message
  # maddy writes to its stdin.
  cat > "$D/envelope-hdr.sh" <<'EOF'
#!/bin/sh
# generated by internal/peers/maddy.sh: $1 = MAIL FROM, $2 = RCPT TOs, one a line
cat >/dev/null
printf 'X-Envelope-From: <%s>\nX-Envelope-To: %s\n' "$1" "$(printf '%s\n' "$2" | paste -sd, -)"
EOF
  chmod 755 "$D/envelope-hdr.sh"
  cat > "$D/maddy.conf" <<EOF
# generated by internal/peers/maddy.sh
state_dir $D/state
runtime_dir $D/run
hostname $MADDY_HOSTNAME
autogenerated_msg_domain example.org
tls file $D/tls/cert.pem $D/tls/key.pem
log stderr_ts

auth.pass_table local_authdb {
    table file $D/passwd
}

# One account ("catchall") gets every message, whatever the recipients;
# the message files are in msg_store.
storage.imapsql submitted_store {
    driver sqlite3
    dsn $D/state/submitted.db
    msg_store fs $D/store/submitted
    delivery_map regexp ".*" "catchall"
}

submission tcp://127.0.0.1:$MADDY_SUBMISSION_PORT tls://127.0.0.1:$MADDY_SUBMISSIONS_PORT {
    auth &local_authdb
    sasl_login yes
    check {
        command $D/envelope-hdr.sh {sender} {rcpts}
    }
    default_source {
        default_destination {
            deliver_to &submitted_store
        }
    }
}
EOF
  "$MADDY_BIN" --config "$D/maddy.conf" imap-acct create --cfg-block submitted_store catchall >/dev/null 2>>"$D/maddy.log"
  mkdir -p "$D/store/submitted" # maddy creates it too, but tests may look first
}

# stamp identifies the configuration a running server was started with, so
# `start` restarts it when this script, its settings or the binary changed.
stamp() {
  { cat "${BASH_SOURCE[0]}"
    echo "$PEERS_DIR $MADDY_SUBMISSION_PORT $MADDY_SUBMISSIONS_PORT $MADDY_USER $MADDY_PASS $MADDY_DNS $MADDY_BIN"
  } | sha256sum | cut -c1-16
}

pid() { cat "$D/run/maddy.pid" 2>/dev/null || true; }
# running: the pid file names a live maddy, not a zombie or a recycled pid.
is_running() { alive "$(pid)" maddy; }

do_start() {
  do_install
  up_to_date && return 0
  local s; s=$(stamp)
  local t0=${EPOCHREALTIME/./}
  mkdir -p "$D"
  : > "$D/maddy.log"
  configure
  ( cd "$D" && exec setsid "$MADDY_BIN" --config "$D/maddy.conf" --debug.dnsoverride "$MADDY_DNS" run \
      </dev/null >>"$D/maddy.log" 2>&1 ) &
  echo $! > "$D/run/maddy.pid"
  local p ok
  for p in "$MADDY_SUBMISSION_PORT" "$MADDY_SUBMISSIONS_PORT"; do
    ok=0
    for _ in $(seq 1 100); do
      is_running || break
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=1; break; fi
      sleep 0.1
    done
    if [ "$ok" != 1 ]; then
      if is_running; then log "127.0.0.1:$p did not open; see $D/maddy.log:"
      else log "maddy exited; see $D/maddy.log:"; fi
      tail -20 "$D/maddy.log" >&2
      do_stop >/dev/null 2>&1 || true
      return 1
    fi
  done
  # The ports answer, but is it our maddy (and not another server holding a
  # port, with ours dead on "address already in use")?
  sleep 0.2
  if ! is_running; then
    log "maddy exited; see $D/maddy.log:"; tail -20 "$D/maddy.log" >&2; return 1
  fi
  echo "$s" > "$D/stamp"
  log "up in $(( (${EPOCHREALTIME/./} - t0) / 1000 )) ms (pid $(pid)): submission 127.0.0.1:$MADDY_SUBMISSION_PORT, submissions 127.0.0.1:$MADDY_SUBMISSIONS_PORT; mail in $D/store/submitted; log $D/maddy.log"
}

do_stop() {
  stop_pid "$(pid)" maddy 100
  rm -f "$D/run/maddy.pid" "$D/stamp"
  log "stopped"
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status)
    if is_running; then echo "maddy: running pid $(pid) (submission :$MADDY_SUBMISSION_PORT, submissions :$MADDY_SUBMISSIONS_PORT)"
    else echo "maddy: stopped"; exit 1; fi ;;
  *) echo "usage: $0 install|start|stop|restart|status" >&2; exit 2 ;;
esac
