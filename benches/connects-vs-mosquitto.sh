#!/bin/bash
# Connects/s and connects per broker CPU-second: Shoal builds and Mosquitto (bench-peers
# config on its own port), alternating rounds, a fresh broker and a fresh port per run.
#
#   benches/connects-vs-mosquitto.sh [ROUNDS] [LABEL=SHOAL_BINARY ...]
#
# Default: 3 rounds of target/release/shoal against Mosquitto. Each run opens 19,000
# connections over --bind 127.0.0.2..9 with `shoal-loadgen conn` (LG= another build),
# holds them 1 s and disconnects, and prints one line: label, connects/s (wall clock),
# broker CPU-s over the connect phase and connects per broker CPU-second; then over the
# whole run (connects and disconnects), the broker's user and system CPU per connection
# (/proc/PID/stat), the load generator's CPU per connection, and the broker's context
# switches per connection.
# FLOOR=1 adds benches/connect-floor.c (the least an epoll server can do per connect:
# accept, read, write, close; built with cc) to each round, as the kernel's floor.
# Needs target/release/shoal-loadgen, /usr/sbin/mosquitto and a nofile limit above 19k.
cd "$(dirname "$0")/.." || exit 1
ROUNDS=${1:-3}
shift
BROKERS=("$@")
[ ${#BROKERS[@]} -eq 0 ] && BROKERS=(shoal=target/release/shoal)
LG=${LG:-target/release/shoal-loadgen}
N=${CONNS:-19000}
BIND=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5,127.0.0.6,127.0.0.7,127.0.0.8,127.0.0.9
MOSQ_PORT=${MOSQ_PORT:-18931}
MOSQ_CONF=$(mktemp)
sed "s/^listener 18830 /listener $MOSQ_PORT /" "${PEERS:-../shared/bench-peers}/mosquitto.conf" >"$MOSQ_CONF"
PORT=${BASE_PORT:-19400}
if [ -n "$FLOOR" ]; then
  cc -O2 -o target/connect-floor benches/connect-floor.c || exit 1
fi
TICKS=$(getconf CLK_TCK)

ctxsw() { # voluntary + involuntary context switches over all threads of $1
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
cputicks() { # "utime stime" of $1, clock ticks (fields 14 and 15 of /proc/PID/stat)
  sed 's/.*) //' /proc/"$1"/stat | awk '{print $12, $13}'
}

run() { # label pid port
  sleep 0.5
  local c0 out cps cpu c1 u0 s0 u1 s1 lu ls
  c0=$(ctxsw "$2")
  read -r u0 s0 < <(cputicks "$2")
  out=$( { /usr/bin/time -f "loadgen-cpu %U %S" $LG conn --port "$3" -c "$N" -d 1 \
    --broker-pid "$2" --bind "$BIND"; } 2>&1)
  read -r u1 s1 < <(cputicks "$2")
  c1=$(ctxsw "$2")
  kill "$2"
  wait "$2" 2>/dev/null
  cps=$(echo "$out" | sed -n 's/^connect .* in \([0-9.]*\) s.*/\1/p')
  cpu=$(echo "$out" | sed -n 's/^broker .*: \([0-9.]*\) CPU-s.*/\1/p')
  read -r lu ls < <(echo "$out" | sed -n 's/^loadgen-cpu //p')
  local ok
  ok=$(echo "$out" | sed -n 's/^connect *\([0-9]*\)\/.*/\1/p')
  awk -v l="$1" -v n="$ok" -v s="$cps" -v c="$cpu" -v c0="$c0" -v c1="$c1" -v t="$TICKS" \
    -v bu=$((u1 - u0)) -v bs=$((s1 - s0)) -v lu="${lu:-0}" -v ls="${ls:-0}" \
    -v load="$(cut -d' ' -f1 /proc/loadavg)" \
    'BEGIN { printf "%-10s %6d conns %7.0f conn/s %5.2f CPU-s %7.0f conn/CPU-s | per conn: broker user %4.1f sys %4.1f us, loadgen %5.1f us, %4.2f ctxsw | load %s\n",
             l, n, n / s, c, n / c, bu / t * 1e6 / n, bs / t * 1e6 / n, (lu + ls) * 1e6 / n, (c1 - c0) / n, load }'
}

for r in $(seq "$ROUNDS"); do
  for b in "${BROKERS[@]}"; do
    PORT=$((PORT + 1))
    ${b#*=} --in-memory --listen 127.0.0.1:$PORT >/dev/null 2>/tmp/connects-bench-shoal.log &
    run "${b%%=*}" $! $PORT
  done
  /usr/sbin/mosquitto -c "$MOSQ_CONF" >/dev/null 2>&1 &
  run mosquitto $! "$MOSQ_PORT"
  if [ -n "$FLOOR" ]; then
    PORT=$((PORT + 1))
    target/connect-floor $PORT &
    run floor $! $PORT
  fi
done
rm -f "$MOSQ_CONF"
