#!/usr/bin/env python3
"""Publish N QoS 1 messages (64 B payload) to TOPIC over raw MQTT 3.1.1, from K clients,
each pipelining up to WINDOW unacknowledged publishes. With --noise R, R extra messages
to a topic nobody subscribes to go between each pair of counted ones (sparse case)."""
import sys, threading, argparse, time

import rawmqtt


def client(port, idx, n, topic, noise, window):
    s = rawmqtt.connect(port, b'fill-%d' % idx, clean=True)
    payload = (b'%063d' % 0)[:63] + b'\n'
    sent = 0; acked = 0; pid = 0
    buf = bytearray(); pend = 0
    noise_topic = b'noise/' + topic
    total_pubs = n * (1 + noise)
    acks_needed = total_pubs
    rbuf = b''
    while acked < acks_needed:
        while sent < total_pubs and sent - acked < window:
            pid = pid % 65535 + 1
            t = topic if sent % (1 + noise) == 0 else noise_topic
            buf += rawmqtt.publish(t, 1, pid, payload); sent += 1
        if buf:
            s.sendall(buf); buf = bytearray()
        rbuf += s.recv(65536)
        k = len(rbuf) // 4
        acked += k; rbuf = rbuf[k*4:]
    s.close()

ap = argparse.ArgumentParser()
ap.add_argument('--port', type=int); ap.add_argument('--n', type=int)
ap.add_argument('--clients', type=int, default=4); ap.add_argument('--topic', default='bench/1m')
ap.add_argument('--noise', type=int, default=0); ap.add_argument('--window', type=int, default=2000)
a = ap.parse_args()
t0 = time.time()
ths = [threading.Thread(target=client, args=(a.port, i, a.n // a.clients, a.topic.encode(), a.noise, a.window)) for i in range(a.clients)]
[t.start() for t in ths]; [t.join() for t in ths]
print(f'published {a.n//a.clients*a.clients} (+noise x{a.noise}) in {time.time()-t0:.1f}s', file=sys.stderr)
