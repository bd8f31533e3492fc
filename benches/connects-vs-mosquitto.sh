#!/bin/bash
# Connects/s and connects per broker CPU-second: Shoal builds and Mosquitto (bench-peers
# config on its own port), alternating rounds, a fresh broker and a fresh port per run.
#
#   benches/connects-vs-mosquitto.sh [ROUNDS] [LABEL=SHOAL_BINARY ...]
#
# Default: 3 rounds of target/release/shoal against Mosquitto. Each run opens 19,000
# connections over --bind 127.0.0.2..9 with `shoal-loadgen conn` and prints one line:
# label, connects/s (wall clock), broker CPU-s over the connect phase, connects per
# broker CPU-second, and the broker's context switches per connect over the whole run.
# Needs target/release/shoal-loadgen, /usr/sbin/mosquitto and a nofile limit above 19k.
cd "$(dirname "$0")/.." || exit 1
ROUNDS=${1:-3}
shift
BROKERS=("$@")
[ ${#BROKERS[@]} -eq 0 ] && BROKERS=(shoal=target/release/shoal)
LG=target/release/shoal-loadgen
N=${CONNS:-19000}
BIND=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
MOSQ_PORT=${MOSQ_PORT:-18931}
MOSQ_CONF=$(mktemp)
sed "s/^listener 18830 /listener $MOSQ_PORT /" "${PEERS:-../shared/bench-peers}/mosquitto.conf" >"$MOSQ_CONF"
PORT=${BASE_PORT:-19400}

ctxsw() { # voluntary + involuntary context switches over all threads of $1
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}

run() { # label pid port
  sleep 0.5
  local c0 out cps cpu c1
  c0=$(ctxsw "$2")
  out=$($LG conn --port "$3" -c "$N" -d 1 --broker-pid "$2" --bind "$BIND" 2>&1)
  c1=$(ctxsw "$2")
  kill "$2"
  wait "$2" 2>/dev/null
  cps=$(echo "$out" | sed -n 's/^connect .* in \([0-9.]*\) s.*/\1/p')
  cpu=$(echo "$out" | sed -n 's/^broker .*: \([0-9.]*\) CPU-s.*/\1/p')
  local ok
  ok=$(echo "$out" | sed -n 's/^connect *\([0-9]*\)\/.*/\1/p')
  awk -v l="$1" -v n="$ok" -v s="$cps" -v c="$cpu" -v c0="$c0" -v c1="$c1" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN { printf "%-10s %6d conns  %7.0f conn/s  %5.2f CPU-s  %7.0f conn/CPU-s  %5.2f ctxsw/conn  load %s\n",
             l, n, n / s, c, n / c, (c1 - c0) / n, load }'
}

for r in $(seq "$ROUNDS"); do
  for b in "${BROKERS[@]}"; do
    PORT=$((PORT + 1))
    ${b#*=} --in-memory --listen 127.0.0.1:$PORT >/dev/null 2>/tmp/connects-bench-shoal.log &
    run "${b%%=*}" $! $PORT
  done
  /usr/sbin/mosquitto -c "$MOSQ_CONF" >/dev/null 2>&1 &
  run mosquitto $! "$MOSQ_PORT"
done
rm -f "$MOSQ_CONF"
