#!/usr/bin/env python3
"""sub.py PORT [COUNT]: persistent session q1m subscribes QoS 1 to bench/1m and leaves
(no COUNT), or reconnects and receives COUNT messages, acking each (prints the count)."""
import socket, struct, sys
port = int(sys.argv[1]); count = int(sys.argv[2]) if len(sys.argv) > 2 else None
s = socket.create_connection(('127.0.0.1', port))
cid = b'q1m'
v = b'\x00\x04MQTT\x04\x00\x00\x3c' + struct.pack('>H', len(cid)) + cid
s.sendall(b'\x10' + bytes([len(v)]) + v)
buf = b''
def packet():
    global buf
    while True:
        if len(buf) >= 2:
            mult, n, i = 1, 0, 1
            while i < len(buf):
                b = buf[i]; n += (b & 0x7f) * mult; mult *= 128; i += 1
                if not b & 0x80: break
            else:
                i = None
            if i and len(buf) >= i + n:
                p = buf[:i+n]; buf = buf[i+n:]; return p[0], p[i:]
        c = s.recv(1 << 20)
        if not c: raise EOFError
        buf += c
t, _ = packet(); assert t == 0x20
if count is None:
    f = b'bench/1m'
    v = b'\x00\x01' + struct.pack('>H', len(f)) + f + b'\x01'
    s.sendall(b'\x82' + bytes([len(v)]) + v)
    t, _ = packet(); assert t == 0x90
    s.sendall(b'\xe0\x00'); s.close(); sys.exit(0)
got = 0; acks = bytearray()
while got < count:
    t, body = packet()
    if t & 0xf0 == 0x30:
        tl = struct.unpack('>H', body[:2])[0]
        pid = body[2+tl:4+tl]
        acks += b'\x40\x02' + pid; got += 1
        if len(acks) >= 200 or got == count:
            s.sendall(acks); acks = bytearray()
print(got)
