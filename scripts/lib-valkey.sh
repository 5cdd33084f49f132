# shellcheck shell=bash
# Sourced by scripts/with-valkey.sh and scripts/with-valkey-cluster.sh: starts throwaway
# valkey-servers that count as ready only when they answer as themselves.
#
#   valkey_start_node DIR [valkey-server args ...]
#       Starts valkey-server in the background on a free loopback port, its log in DIR/valkey.log,
#       and waits (bounded) until `INFO server` on that port reports the child's own process_id.
#       When the bind fails (the port was taken after it was chosen, by a parallel test's server
#       or anything else) it starts again on a new port, at most VALKEY_START_ATTEMPTS times.
#       Any "@BUS@" in the arguments becomes a fresh free port with every attempt (a cluster bus).
#       On success sets NODE_PORT and NODE_PID and returns 0; otherwise prints why, with the tail
#       of the server's log, and returns 1 (the caller must not go on as if a server ran).
#       While it waits, VALKEY_STARTING_PID is the child's pid, for the caller's cleanup trap.
#
# WITH_VALKEY_PORTS="P1 P2 ..." makes the first attempts use these ports (for the tests of these
# scripts, which occupy a port first to show that the next attempt moves to another one).

VALKEY_START_ATTEMPTS=${VALKEY_START_ATTEMPTS:-5}
VALKEY_START_TIMEOUT_S=${VALKEY_START_TIMEOUT_S:-10}
read -r -a _valkey_port_queue <<<"${WITH_VALKEY_PORTS:-}"

# Sets FREE_PORT to a loopback port nothing listens on right now (or to the next one of
# WITH_VALKEY_PORTS). Not meant for $(...): the queue must shrink in this shell.
valkey_free_port() {
  if [ ${#_valkey_port_queue[@]} -gt 0 ]; then
    FREE_PORT=${_valkey_port_queue[0]}
    _valkey_port_queue=("${_valkey_port_queue[@]:1}")
    return
  fi
  FREE_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
}

# The last lines of what a server in DIR logged, indented.
valkey_log_tail() {
  local f
  for f in "$1/stderr.log" "$1/valkey.log"; do
    [ -s "$f" ] && tail -n 30 "$f" | sed "s|^|  $(basename "$f"): |"
  done
  return 0
}

# The process_id that `INFO server` on port $1 reports (password $2 if not empty), or nothing.
valkey_answering_pid() {
  REDISCLI_AUTH=${2:-} timeout 3 valkey-cli -h 127.0.0.1 -p "$1" -t 1 INFO server 2>/dev/null |
    tr -d '\r' | sed -n 's/^process_id://p'
}

valkey_start_node() {
  local dir=$1 attempt port pid password="" args a prev="" taken deadline answer
  shift
  for a in "$@"; do
    [ "$prev" = "--requirepass" ] && password=$a
    prev=$a
  done
  mkdir -p "$dir"
  for attempt in $(seq 1 "$VALKEY_START_ATTEMPTS"); do
    valkey_free_port
    port=$FREE_PORT
    args=()
    for a in "$@"; do
      if [ "$a" = "@BUS@" ]; then valkey_free_port; args+=("$FREE_PORT"); else args+=("$a"); fi
    done
    rm -f "$dir/valkey.log" "$dir/stderr.log"
    valkey-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
      --logfile "$dir/valkey.log" --protected-mode no "${args[@]}" </dev/null >"$dir/stderr.log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2034 # for the cleanup trap of the script that sources this file
    VALKEY_STARTING_PID=$pid
    deadline=$((SECONDS + VALKEY_START_TIMEOUT_S))
    answer=""
    while :; do
      if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" 2>/dev/null || true
        if taken=$(grep -m1 -E 'Address already in use|Failed listening on port' "$dir/valkey.log" 2>/dev/null); then
          echo "valkey-server on port $port (attempt $attempt) could not listen: ${taken#*# }; trying new ports" >&2
          continue 2
        fi
        echo "valkey-server on port $port exited before it was ready; its log ends:" >&2
        valkey_log_tail "$dir" >&2
        return 1
      fi
      answer=$(valkey_answering_pid "$port" "$password")
      if [ "$answer" = "$pid" ]; then
        # shellcheck disable=SC2034 # the results, for the script that sources this file
        NODE_PORT=$port NODE_PID=$pid
        return 0
      fi
      # Credentials we do not know (an ACL file...): our own log saying it listens, from a child
      # that is still alive, proves the port is ours.
      if [ -z "$answer" ] && [ -z "$password" ] &&
         REDISCLI_AUTH="" timeout 3 valkey-cli -h 127.0.0.1 -p "$port" -t 1 PING 2>/dev/null | grep -q NOAUTH &&
         grep -q 'Ready to accept connections' "$dir/valkey.log" 2>/dev/null; then
        # shellcheck disable=SC2034
        NODE_PORT=$port NODE_PID=$pid
        return 0
      fi
      if [ "$SECONDS" -ge "$deadline" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if [ -n "$answer" ]; then
          echo "valkey-server: port $port is answered by process $answer, not ours ($pid); trying another" >&2
          continue 2
        fi
        echo "valkey-server on port $port did not answer as itself within ${VALKEY_START_TIMEOUT_S}s; its log ends:" >&2
        valkey_log_tail "$dir" >&2
        return 1
      fi
      sleep 0.05
    done
  done
  echo "valkey-server could not get a port of its own in $VALKEY_START_ATTEMPTS attempts; the last log ends:" >&2
  valkey_log_tail "$dir" >&2
  return 1
}
