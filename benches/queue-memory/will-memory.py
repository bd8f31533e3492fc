"""RSS of N idle connections that each left a will, after the worker saw large reads.

Usage: willmem.py BROKER_BINARY PORT N
"""
import os, socket, struct, subprocess, sys, time

binary, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def s(b): return struct.pack(">H", len(b)) + b
def varint(x):
    out = b""
    while True:
        d = x % 128; x //= 128
        out += bytes([d | (0x80 if x else 0)])
        if not x: return out
def frame(first, body): return bytes([first]) + varint(len(body)) + body
def connect(cid, will=True):
    flags = 0x02 | (0x04 | 0x08 | 0x20 if will else 0)
    body = s(b"MQTT") + bytes([4, flags]) + struct.pack(">H", 0) + s(cid)
    if will: body += s(b"dev/" + cid + b"/status") + s(b"OFFLINE")
    return frame(0x10, body)
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])

b = subprocess.Popen([binary, "--in-memory", "--listen", f"127.0.0.1:{port}", "--workers", "2"],
                     stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
time.sleep(0.5)
# A publisher that sends a large burst on each worker (big reads grow the decode buffer).
pubs = []
for i in range(4):
    p = socket.create_connection(("127.0.0.1", port)); p.sendall(connect(b"burst-%d" % i, False)); p.recv(4)
    payload = b"x" * 1000
    burst = b"".join(frame(0x30, s(b"burst/t") + payload) for _ in range(200))
    p.sendall(burst); pubs.append(p)
time.sleep(0.5)
base = rss(b.pid)
socks = []
for i in range(n):
    c = socket.create_connection(("127.0.0.1", port))
    c.sendall(connect(b"dev-%06d" % i))
    socks.append(c)
for c in socks:
    c.recv(4)
time.sleep(1.0)
after = rss(b.pid)
print(f"{os.path.basename(binary)}: {n} idle connections with wills: RSS {base} -> {after} KiB, "
      f"{(after - base) * 1024 / n:.0f} B per connection")
b.terminate(); b.wait()
