#!/bin/bash
# p50/p99 at 10k msg/s, Shoal vs Mosquitto (bench-peers config), 5 alternating rounds.
# Needs target/release/{shoal,shoal-loadgen} and /usr/sbin/mosquitto; ports 19151 and 18830.
cd "$(dirname "$0")/.."
LG=target/release/shoal-loadgen
/usr/sbin/mosquitto -c "${PEERS:-../shared/bench-peers}/mosquitto.conf" > /tmp/mosq-lat.log 2>&1 &
MPID=$!
target/release/shoal --in-memory --listen 127.0.0.1:19151 > /tmp/shoal-lat.log 2>&1 &
SPID=$!
sleep 1
for r in 1 2 3 4 5; do
  echo "=== round $r shoal"; $LG latency --port 19151 --rate 10000 -d 5 --broker-pid $SPID 2>&1 | grep -iE "p50|p99|latency|cpu" | head -4
  echo "=== round $r mosquitto"; $LG latency --port 18830 --rate 10000 -d 5 --broker-pid $MPID 2>&1 | grep -iE "p50|p99|latency|cpu" | head -4
done
kill $SPID $MPID
