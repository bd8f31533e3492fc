#!/usr/bin/env python3
"""Memory a publisher that ignores its window can make the broker hold (docs/PERFORMANCE.md).

  blast-memory.py BROKER PORT [N] [QOS] [PERSIST] [PAYLOAD] [RETAIN]

Starts BROKER (persistence = PERSIST, default true) on 127.0.0.1:PORT. A persistent
3.1.1 subscriber takes `blast/#` at QoS 1 and reads and acknowledges everything. A
persistent 3.1.1 publisher then sends N (default 2,000,000) PUBLISHes of PAYLOAD bytes
(default 64) at QOS (1 or 2) to `blast/t` (retained if RETAIN is `retain`, so
that every message is written to the store) as fast as the socket takes them and never
reads its socket (no PUBACK/PUBREC read, no PUBREL sent). Samples the broker's VmRSS
every 0.5 s; the publisher gives up once its socket has taken nothing for 5 s. Prints
what the broker accepted (bytes through the socket), the peak RSS and whether the
publisher was disconnected.

SHOAL_LIMITS in the environment, `key = value` pairs separated by `;`, goes into the
broker's `[limits]` table (e.g. `max_held_bytes = 1048576`), for A/B runs of a bound.
BLAST_SUB_ID sets the subscriber's client id (default `blast-sub`, which shares a worker
with `blast-pub` at 2 workers; `blast-sub2` lands on the other one), BLAST_STALL the
seconds without progress after which the publisher gives up (default 5).
"""
import os, socket, struct, subprocess, sys, tempfile, threading, time

import rawmqtt
from rawmqtt import enc_len

BIN, PORT = sys.argv[1], int(sys.argv[2])
N = int(sys.argv[3]) if len(sys.argv) > 3 else 2_000_000
QOS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
PERSIST = sys.argv[5] if len(sys.argv) > 5 else 'true'
PAYLOAD = int(sys.argv[6]) if len(sys.argv) > 6 else 64
RETAIN = len(sys.argv) > 7 and sys.argv[7] == 'retain'
STALL = float(os.environ.get('BLAST_STALL', '5'))
SUB_ID = os.environ.get('BLAST_SUB_ID', 'blast-sub').encode()




def rss(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            for line in f:
                if line.startswith('VmRSS'): return int(line.split()[1])
    except OSError:
        return 0


received = [0]


def subscriber(s):
    """Reads every PUBLISH and acknowledges it (QoS 1: PUBACK; QoS 2: PUBREC, PUBCOMP)."""
    buf = bytearray()
    try:
        while True:
            c = s.recv(1 << 16)
            if not c: return
            buf += c
            out = bytearray(); i = 0
            while True:
                if len(buf) - i < 2: break
                mult, ln, j = 1, 0, i + 1
                while j < len(buf):
                    b = buf[j]; ln += (b & 0x7f) * mult; mult *= 128; j += 1
                    if not b & 0x80: break
                else:
                    break
                if len(buf) - j < ln: break
                t = buf[i] >> 4
                if t == 3:
                    q = (buf[i] >> 1) & 3
                    if q:
                        tl = struct.unpack_from('>H', buf, j)[0]
                        pid = buf[j + 2 + tl:j + 4 + tl]
                        out += (b'\x40\x02' if q == 1 else b'\x50\x02') + pid
                    received[0] += 1
                elif t == 6:  # PUBREL
                    out += b'\x70\x02' + buf[j:j + 2]
                i = j + ln
            del buf[:i]
            if out: s.sendall(out)
    except OSError:
        return


d = tempfile.mkdtemp()
with open(f'{d}/c.toml', 'w') as f:
    f.write(f'persistence = {PERSIST}\ndata_dir = "{d}/data"\n'
            f'[[listener]]\nbind = "127.0.0.1:{PORT}"\n')
    limits = os.environ.get('SHOAL_LIMITS', '')
    if limits:
        f.write('[limits]\n' + '\n'.join(l.strip() for l in limits.split(';')) + '\n')
broker = subprocess.Popen([BIN, '--config', f'{d}/c.toml'], stdout=subprocess.PIPE,
                          stderr=open(f'{d}/log', 'w'))
broker.stdout.readline()  # "listening on ..."
time.sleep(0.3)
r0 = rss(broker.pid)
sub = rawmqtt.connect(PORT, SUB_ID, clean=False)
v = b'\x00\x01' + struct.pack('>H', 7) + b'blast/#' + b'\x01'
sub.sendall(b'\x82' + enc_len(len(v)) + v)
assert sub.recv(5)[0] == 0x90
threading.Thread(target=subscriber, args=(sub,), daemon=True).start()

pub = rawmqtt.connect(PORT, b'blast-pub', clean=False)
pub.settimeout(0.5)
payload = b'x' * PAYLOAD
# One chunk of 1,000 publishes, packet ids advancing (ids wrap at 65535).
size = len(rawmqtt.publish(b'blast/t', QOS, 1, payload, RETAIN))
sent = 0; last_progress = time.monotonic(); peak = r0; closed = ''
samples = []
next_sample = time.monotonic()
pid = 0
chunk = b''
t0 = time.monotonic()
while sent < N * size:
    now = time.monotonic()
    if now >= next_sample:
        r = rss(broker.pid); peak = max(peak, r)
        samples.append((round(now - t0, 1), sent // size, r))
        next_sample = now + 0.5
    if not chunk:
        b = bytearray()
        for _ in range(min(1000, N - sent // size)):
            pid = pid % 65535 + 1
            b += rawmqtt.publish(b'blast/t', QOS, pid, payload, RETAIN)
        chunk = bytes(b)
    try:
        k = pub.send(chunk)
    except socket.timeout:
        k = 0
    except OSError as e:
        closed = f'publisher closed by the broker ({e.__class__.__name__})'
        break
    if k:
        sent += k; chunk = chunk[k:]; last_progress = now
    elif now - last_progress > STALL:
        break
# A final sample once the broker has settled.
time.sleep(1)
r = rss(broker.pid); peak = max(peak, r)
samples.append((round(time.monotonic() - t0, 1), sent // size, r))
for t, n, r in samples[::max(1, len(samples) // 12)]:
    print(f'  t={t:5.1f}s accepted={n:8d} rss_kB={r}')
print(f'n={N} qos={QOS} persist={PERSIST} payload={PAYLOAD} retain={RETAIN} idle_kB={r0} '
      f'accepted_msgs={sent // size} accepted_MB={sent / 1e6:.1f} peak_rss_kB={peak} '
      f'final_rss_kB={r} subscriber_got={received[0]} {closed or "publisher stalled (reads paused)" if sent < N * size else "all sent"}')
pub.close(); sub.close()
broker.terminate(); broker.wait()
with open(f'{d}/log') as f:
    tail = [l for l in f if 'blast-pub' in l or 'Receive Maximum' in l]
for l in tail[-3:]:
    print('  log:', l.rstrip())
subprocess.run(['rm', '-rf', d])
