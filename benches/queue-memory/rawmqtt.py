"""Just enough MQTT 3.1.1 over a raw socket for the memory scripts in this directory:
they need clients that behave badly on purpose (never read, never acknowledge), which
a client library would not let them do."""
import socket, struct


def enc_len(n):
    """The Remaining Length varint."""
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | 0x80 if n else b)
        if not n: return bytes(out)


def connect(port, cid, clean):
    """A 3.1.1 connection to 127.0.0.1:port, CONNACK 0 checked."""
    s = socket.create_connection(('127.0.0.1', port))
    v = b'\x00\x04MQTT\x04' + bytes([0x02 if clean else 0x00]) + b'\x00\x3c'
    v += struct.pack('>H', len(cid)) + cid
    s.sendall(b'\x10' + enc_len(len(v)) + v)
    got = b''
    while len(got) < 4:
        c = s.recv(4 - len(got))
        if not c: raise EOFError
        got += c
    assert got[0] == 0x20 and got[3] == 0, got
    return s


def publish(topic, qos, pid, payload, retain=False):
    """The bytes of one PUBLISH."""
    v = struct.pack('>H', len(topic)) + topic
    if qos: v += struct.pack('>H', pid)
    v += payload
    return bytes([0x30 | qos << 1 | int(retain)]) + enc_len(len(v)) + v
