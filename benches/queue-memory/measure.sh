#!/bin/bash
# Memory that queued messages cost (docs/PERFORMANCE.md, "The durable store (issue 7)").
#
#   measure.sh BROKER PORT N PERSIST [NOISE] [recover]
#
# Starts BROKER (persistence = PERSIST, true|false) on 127.0.0.1:PORT, subscribes the
# persistent session q1m at QoS 1 to bench/1m and leaves it offline, publishes N QoS 1
# messages of 64 B to it (with NOISE messages to an unsubscribed topic between each two,
# the case where few of a read chunk's frames are kept) and prints VmRSS before and
# after, per queued message. With `recover`: kill -9, restart on the same data, RSS
# after recovery; VERIFY=1 then also reconnects q1m and counts what it receives.
set -u
BIN=$1; PORT=$2; N=$3; PERSIST=$4; NOISE=${5:-0}; RECOVER=${6:-no}
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
cat > "$D/c.toml" <<EOT
persistence = $PERSIST
data_dir = "$D/data"
[[listener]]
bind = "127.0.0.1:$PORT"
[limits]
max_queued_messages = 2000000
max_queued_bytes = 0
EOT
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
"$BIN" --config "$D/c.toml" > "$D/log1" 2>&1 & P=$!
sleep 0.5
python3 "$HERE/sub.py" "$PORT"
R0=$(rss $P)
python3 "$HERE/fill.py" --port "$PORT" --n "$N" --clients 4 --noise "$NOISE" 2>> "$D/log1"
sleep 1
R1=$(rss $P)
echo "n=$N persist=$PERSIST noise=$NOISE idle_kB=$R0 queued_kB=$R1 per_entry_B=$(( (R1-R0)*1024/N ))"
if [ "$RECOVER" = recover ]; then
  kill -9 $P; wait $P 2>/dev/null
  du -sh "$D/data" | awk '{print "  data directory", $1}'
  "$BIN" --config "$D/c.toml" > "$D/log2" 2>&1 & P=$!
  until grep -q listening "$D/log2"; do sleep 0.05; done
  sleep 1
  R2=$(rss $P)
  echo "  after recovery kB=$R2 per_entry_B=$(( (R2-R0)*1024/N )) $(grep -o 'restored in .*' "$D/log2")"
  if [ -n "${VERIFY:-}" ]; then
    echo "  received $(timeout 300 python3 "$HERE/sub.py" "$PORT" "$N")"
  fi
fi
kill $P; wait $P 2>/dev/null
