#!/usr/bin/env bash
# internal/peers/peers.sh - entry point for the real servers mailroute's tests
# run against on loopback: Postfix (MX receiver + submission smarthost, see
# postfix.sh), CoreDNS (the test zones, see coredns.sh), a DNSSEC view of
# some of them behind a validating Unbound (DANE and MTA-STS, see dnssec.sh)
# and maddy (a second
# submission smarthost, see maddy.sh) and PostgreSQL (the shared queue of
# mailroute/riverqueue, see postgres.sh). Used by .ci/run and by developers;
# internal/peertest reads the environment printed by `env`.
#
# Usage: peers.sh install|start|stop|restart|status|env
#   install  apt-get install Postfix, PostgreSQL, Unbound and ldnsutils (root), build CoreDNS and
#            maddy with go (cached)
#   start    install if needed, then start every peer; idempotent (a peer that
#            runs with the same configuration is left alone, one whose
#            configuration changed is restarted); a fresh start empties the
#            Maildirs (Postfix), the message store (maddy) and the database
#            (PostgreSQL)
#   stop     stop every peer (no-op when none runs)
#   status   one line per peer; exit 1 unless all run
#   env      print the `export` lines for the tests:
#              eval "$(bash internal/peers/peers.sh env)"; go test ./...
#
# Typical local use (as root, no systemd needed):
#   bash internal/peers/peers.sh start
#   eval "$(bash internal/peers/peers.sh env)"
#   go test ./...
#
# Env: PEERS_DIR (/tmp/mailroute-peers): all state, logs, Maildirs, maddy's
# store and the cached CoreDNS and maddy binaries. The settings of
# postfix.sh, coredns.sh, maddy.sh and postgres.sh (PF_SMTP_PORT, DNS_PORT,
# MADDY_SUBMISSION_PORT, PG_PORT, ...) are honoured here too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PEERS_DIR=${PEERS_DIR:-/tmp/mailroute-peers}

# The peers, in start order (maddy's DNS is CoreDNS, so it comes after; the
# DNSSEC view's TLSA records are made from Postfix's certificate).
PEERS="coredns postfix dnssec maddy postgres"

log() { echo "peers: $*" >&2; }

each() { # each ACTION: run ACTION for every peer, in order
  local p
  # 9>&-: the lock fd must not leak into the daemons (CoreDNS would hold the
  # lock for as long as it runs).
  for p in $PEERS; do bash "$HERE/$p.sh" "$1" 9>&-; done
}

# Serialise install/start/stop so that two concurrent runs do not race.
lock() {
  mkdir -p "$PEERS_DIR"
  exec 9>"$PEERS_DIR/.lock"
  flock -w 900 9 || { log "another peers.sh holds $PEERS_DIR/.lock"; exit 1; }
}

print_env() {
  local pf=$PEERS_DIR/postfix
  cat <<EOF
export MAILROUTE_PEERS=1
export MAILROUTE_DNS=${DNS_ADDR:-127.0.0.1}:${DNS_PORT:-5353}
export MAILROUTE_POSTFIX_PORT=${PF_SMTP_PORT:-2525}
export MAILROUTE_POSTFIX_MAILDIR=$pf/mail/inbound
export MAILROUTE_POSTFIX_CERT=$pf/tls/cert.pem
export MAILROUTE_SUBMISSION_ADDR=127.0.0.1:${PF_SUBMISSION_PORT:-5870}
export MAILROUTE_SUBMISSIONS_ADDR=127.0.0.1:${PF_SUBMISSIONS_PORT:-4650}
export MAILROUTE_SUBMITTED_MAILDIR=$pf/mail/submitted
export MAILROUTE_SMARTHOST_USER=${PF_USER:-testuser@example.org}
export MAILROUTE_SMARTHOST_PASS=${PF_PASS:-testpass}
export MAILROUTE_MADDY_SUBMISSION_ADDR=127.0.0.1:${MADDY_SUBMISSION_PORT:-5871}
export MAILROUTE_MADDY_SUBMISSIONS_ADDR=127.0.0.1:${MADDY_SUBMISSIONS_PORT:-4651}
export MAILROUTE_MADDY_STORE=$PEERS_DIR/maddy/store/submitted
export MAILROUTE_MADDY_CERT=$PEERS_DIR/maddy/tls/cert.pem
export MAILROUTE_POSTGRES_URL=$(bash "$HERE/postgres.sh" url)
export MAILROUTE_DNSSEC_RESOLVER=127.0.0.1:${DNSSEC_PORT:-5355}
EOF
  # maddy's credentials only when they differ from Postfix's (peertest falls
  # back to MAILROUTE_SMARTHOST_USER/PASS).
  local mu=${MADDY_USER:-testuser@example.org} mp=${MADDY_PASS:-testpass}
  if [ "$mu" != "${PF_USER:-testuser@example.org}" ] || [ "$mp" != "${PF_PASS:-testpass}" ]; then
    printf 'export MAILROUTE_MADDY_USER=%q\nexport MAILROUTE_MADDY_PASS=%q\n' "$mu" "$mp"
  fi
}

case "${1:-}" in
  install) lock; each install ;;
  start)
    lock
    t0=$SECONDS
    each start
    log "all peers up ($((SECONDS - t0))s); for the tests: eval \"\$(bash $HERE/peers.sh env)\""
    ;;
  stop) lock; each stop ;;
  restart) lock; each stop; each start ;;
  status)
    rc=0
    for p in $PEERS; do bash "$HERE/$p.sh" status || rc=1; done
    exit $rc
    ;;
  env) print_env ;;
  *) echo "usage: $0 install|start|stop|restart|status|env" >&2; exit 2 ;;
esac
