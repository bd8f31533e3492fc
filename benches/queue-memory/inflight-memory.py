#!/usr/bin/env python3
"""Memory that offline sessions' in-flight windows cost (docs/PERFORMANCE.md).

  inflight-memory.py BROKER PORT [ROUNDS] [SESSIONS] [PERSIST]

Starts BROKER (persistence = PERSIST, default false) on 127.0.0.1:PORT. Each round,
SESSIONS persistent 3.1.1 sessions subscribe at QoS 1, one topic each, and never
acknowledge; one publisher sends each of them 100 QoS 1 messages of 64 B (a full
in-flight window, the default `max_inflight`), every one followed by a 4,000 B QoS 0
message nobody subscribes to, so a 64 KiB read chunk holds ~16 kept messages of
different sessions. Once every subscriber has its window, all of them close their
sockets (offline, windows kept). Prints VmRSS after each round: with the windows
pinning read chunks it grows by the chunks, otherwise by the messages.
"""
import os, socket, struct, subprocess, sys, tempfile, time

import rawmqtt
from rawmqtt import enc_len

BIN, PORT = sys.argv[1], int(sys.argv[2])
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
SESSIONS = int(sys.argv[4]) if len(sys.argv) > 4 else 100
PERSIST = sys.argv[5] if len(sys.argv) > 5 else 'false'
WINDOW = 100




def rss(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS'): return int(line.split()[1])


d = tempfile.mkdtemp()
with open(f'{d}/c.toml', 'w') as f:
    f.write(f'persistence = {PERSIST}\ndata_dir = "{d}/data"\n'
            f'[[listener]]\nbind = "127.0.0.1:{PORT}"\n')
broker = subprocess.Popen([BIN, '--config', f'{d}/c.toml'], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
broker.stdout.readline()  # "listening on ..."
time.sleep(0.3)
r0 = rss(broker.pid)
print(f'rounds={ROUNDS} sessions={SESSIONS} persist={PERSIST} idle_kB={r0}')
payload = b'x' * 64
noise = b'n' * 4000
for r in range(ROUNDS):
    subs = []
    for i in range(SESSIONS):
        topic = b'win/%d/%d' % (r, i)
        s = rawmqtt.connect(PORT, b'win-%d-%d' % (r, i), clean=False)
        v = b'\x00\x01' + struct.pack('>H', len(topic)) + topic + b'\x01'
        s.sendall(b'\x82' + enc_len(len(v)) + v)
        assert s.recv(5)[0] == 0x90
        subs.append((s, topic))
    p = rawmqtt.connect(PORT, b'win-pub-%d' % r, clean=True)
    buf = bytearray(); pid = 0
    for k in range(WINDOW):
        for _, topic in subs:
            pid = pid % 65535 + 1
            buf += rawmqtt.publish(topic, 1, pid, payload)
            buf += rawmqtt.publish(b'noise', 0, 0, noise)
    p.sendall(buf)
    acked = 0
    while acked < WINDOW * SESSIONS * 4:
        c = p.recv(65536)
        if not c: raise EOFError
        acked += len(c)
    for s, topic in subs:
        want = WINDOW * (2 + 2 + len(topic) + 2 + len(payload)); got = 0
        while got < want:
            c = s.recv(65536)
            if not c: raise EOFError
            got += len(c)
    online = rss(broker.pid)
    for s, _ in subs:
        s.close()
    p.close()
    time.sleep(0.5)
    offline = rss(broker.pid)
    print(f'  round {r + 1}: windows online kB={online} offline kB={offline} '
          f'per offline in-flight message B={(offline - r0) * 1024 // ((r + 1) * SESSIONS * WINDOW)}')
broker.terminate(); broker.wait()
subprocess.run(['rm', '-rf', d])
