#!/bin/bash
# Disk space of the durable store through a burst (docs/PERFORMANCE.md, "Disk space").
#
#   disk-space.sh BROKER PORT N
#
# Starts BROKER with persistence on 127.0.0.1:PORT, leaves the persistent session q1m
# (bench/1m, QoS 1) and a second one, "tail" (bench/tail), offline; queues N QoS 1
# messages of 64 B for q1m, then one for "tail" (written after the burst, so it could
# keep the end of the file), lets q1m receive all N, and prints the data file's size
# every 10 s for two minutes, then the log lines about compaction.
set -u
BIN=$1; PORT=$2; N=$3
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
trap 'kill $P 2>/dev/null; rm -rf "$D"' EXIT
cat > "$D/c.toml" <<EOT
persistence = true
data_dir = "$D/data"
[[listener]]
bind = "127.0.0.1:$PORT"
[limits]
max_queued_messages = 2000000
max_queued_bytes = 0
EOT
size() { stat -c %s "$D/data/shoal.redb"; }
"$BIN" --config "$D/c.toml" > "$D/log" 2>&1 & P=$!
until grep -q listening "$D/log"; do sleep 0.05; done
python3 "$HERE/sub.py" "$PORT"
python3 - "$PORT" sub <<'PY'
import sys, time
import paho.mqtt.client as mqtt
port, mode = int(sys.argv[1]), sys.argv[2]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tail", clean_session=False)
c.connect("127.0.0.1", port); c.loop_start()
c.subscribe("bench/tail", 1); time.sleep(0.5); c.disconnect(); c.loop_stop()
PY
python3 "$HERE/fill.py" --port "$PORT" --n "$N" --clients 4 --noise 0 2> "$D/fill.log"
echo "after queueing $N: $(size) B"
python3 - "$PORT" <<'PY'
import sys
import paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tailpub")
c.connect("127.0.0.1", int(sys.argv[1])); c.loop_start()
c.publish("bench/tail", b"x" * 64, qos=1).wait_for_publish(10); c.disconnect(); c.loop_stop()
PY
echo "received $(timeout 600 python3 "$HERE/sub.py" "$PORT" "$N"); $(size) B"
for t in 10 20 30 40 50 60 70 80 90 100 110 120; do
  sleep 10; echo "t+${t}s: $(size) B"
done
grep -i compact "$D/log" || echo "(no compaction: redb gave the space back by itself)"
