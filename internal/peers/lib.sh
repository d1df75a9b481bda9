# shellcheck shell=bash
# internal/peers/lib.sh - helpers shared by the peer scripts (sourced, not run).
# A script sets D (its state directory), defines log, stamp, pid and do_stop,
# and calls these.

# alive PID NAME: the process exists, is not a zombie (a peer killed with
# SIGKILL stays a zombie until PID 1 reaps it, and kill -0 still succeeds),
# and its command line mentions NAME.
alive() {
  local p=$1 name=$2 st
  [ -n "$p" ] && [ -r "/proc/$p/stat" ] || return 1
  st=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -d' ' -f1)
  [ "$st" != Z ] && [ "$st" != X ] && tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -q "$name"
}

# up_to_date: true when the peer is running with the configuration stamp
# records; a peer running with another one is stopped, so the caller starts
# it afresh.
up_to_date() {
  is_running || return 1
  if [ "$(cat "$D/stamp" 2>/dev/null)" = "$(stamp)" ]; then
    log "already running (pid $(pid))"; return 0
  fi
  log "configuration changed, restarting"
  do_stop
  return 1
}

# stop_pid PID NAME TRIES: TERM, wait up to TRIES tenths of a second, KILL.
stop_pid() {
  local p=$1 name=$2 tries=$3
  alive "$p" "$name" || return 0
  kill "$p"
  for _ in $(seq 1 "$tries"); do alive "$p" "$name" || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
}
