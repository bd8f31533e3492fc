// A small MQTT 3.1.1 client over WebSocket for the dashboard's "try it" panel:
// CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH (QoS 0/1/2 both ways), PINGREQ, DISCONNECT.
// MQTT packets may be split across or packed into WebSocket messages, so incoming
// bytes go through a stream buffer that cuts complete frames.
"use strict";

(function () {
  const enc = new TextEncoder();
  const dec = new TextDecoder("utf-8", { fatal: false });

  function varint(n) {
    const out = [];
    do {
      let b = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) b |= 0x80;
      out.push(b);
    } while (n > 0);
    return out;
  }

  function str(s) {
    const b = enc.encode(s);
    return [b.length >> 8, b.length & 0xff, ...b];
  }

  function u16(n) {
    return [n >> 8, n & 0xff];
  }

  function frame(first, body) {
    return new Uint8Array([first, ...varint(body.length), ...body]);
  }

  class MqttWsClient {
    constructor() {
      this.ws = null;
      this.buf = new Uint8Array(0);
      this.nextId = 1;
      this.handlers = { state: [], message: [], error: [] };
      this.ping = null;
      this.state = "disconnected";
      this.pendingSubs = new Map();
    }

    on(event, fn) {
      this.handlers[event].push(fn);
    }

    emit(event, ...args) {
      for (const fn of this.handlers[event]) fn(...args);
    }

    setState(s, detail) {
      this.state = s;
      this.emit("state", s, detail);
    }

    connect(url, clientId, keepAlive = 30) {
      this.close();
      let ws;
      try {
        ws = new WebSocket(url, ["mqtt"]);
      } catch (e) {
        this.setState("error", String(e.message || e));
        return;
      }
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      this.buf = new Uint8Array(0);
      this.setState("connecting");
      ws.onopen = () => {
        // Protocol name "MQTT", level 4, flags: clean session; keep-alive; client id.
        const body = [...str("MQTT"), 4, 0x02, ...u16(keepAlive), ...str(clientId)];
        this.send(frame(0x10, body));
      };
      ws.onmessage = (ev) => this.receive(new Uint8Array(ev.data));
      ws.onerror = () => this.setState("error", "WebSocket error (is the URL right and the listener up?)");
      ws.onclose = (ev) => {
        clearInterval(this.ping);
        this.ping = null;
        if (this.ws === ws) {
          this.ws = null;
          if (this.state !== "error") this.setState("disconnected", ev.reason || `closed (${ev.code})`);
        }
      };
      this.keepAlive = keepAlive;
    }

    close() {
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        if (ws.readyState === WebSocket.OPEN) ws.send(new Uint8Array([0xe0, 0x00]));
        ws.close();
        clearInterval(this.ping);
        this.ping = null;
        this.setState("disconnected");
      }
    }

    send(bytes) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes);
    }

    packetId() {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff ? 1 : this.nextId + 1;
      return id;
    }

    subscribe(filter, qos) {
      const id = this.packetId();
      this.pendingSubs.set(id, filter);
      this.send(frame(0x82, [...u16(id), ...str(filter), qos & 3]));
    }

    unsubscribe(filter) {
      this.send(frame(0xa2, [...u16(this.packetId()), ...str(filter)]));
    }

    publish(topic, payload, qos, retain) {
      const body = [...str(topic)];
      if (qos > 0) body.push(...u16(this.packetId()));
      body.push(...enc.encode(payload));
      this.send(frame(0x30 | ((qos & 3) << 1) | (retain ? 1 : 0), body));
    }

    receive(chunk) {
      const joined = new Uint8Array(this.buf.length + chunk.length);
      joined.set(this.buf);
      joined.set(chunk, this.buf.length);
      let pos = 0;
      for (;;) {
        // Fixed header: type byte, then 1-4 bytes of remaining length.
        let len = 0, mult = 1, i = pos + 1, done = false;
        while (i < joined.length && i < pos + 5) {
          const b = joined[i++];
          len += (b & 0x7f) * mult;
          mult *= 128;
          if ((b & 0x80) === 0) { done = true; break; }
        }
        if (!done) {
          if (i >= pos + 5) { this.protocolError("bad remaining length"); return; }
          break;
        }
        if (joined.length < i + len) break;
        this.handle(joined[pos], joined.subarray(i, i + len));
        pos = i + len;
      }
      this.buf = joined.slice(pos);
    }

    protocolError(msg) {
      this.setState("error", msg);
      if (this.ws) this.ws.close();
    }

    handle(first, body) {
      const type = first >> 4;
      const id = body.length >= 2 ? (body[0] << 8) | body[1] : 0;
      switch (type) {
        case 2: { // CONNACK
          const rc = body[1];
          if (rc === 0) {
            this.setState("connected");
            this.ping = setInterval(() => this.send(new Uint8Array([0xc0, 0x00])), this.keepAlive * 500);
          } else {
            this.protocolError(`CONNACK refused, return code ${rc}`);
          }
          break;
        }
        case 3: { // PUBLISH
          const qos = (first >> 1) & 3;
          const tlen = (body[0] << 8) | body[1];
          const topic = dec.decode(body.subarray(2, 2 + tlen));
          let p = 2 + tlen;
          let pid = 0;
          if (qos > 0) { pid = (body[p] << 8) | body[p + 1]; p += 2; }
          const payload = body.subarray(p);
          if (qos === 1) this.send(new Uint8Array([0x40, 2, ...u16(pid)]));
          if (qos === 2) this.send(new Uint8Array([0x50, 2, ...u16(pid)]));
          this.emit("message", { topic, payload, text: dec.decode(payload), qos, retain: (first & 1) === 1 });
          break;
        }
        case 5: // PUBREC for our QoS 2 publish: answer PUBREL
          this.send(new Uint8Array([0x62, 2, ...u16(id)]));
          break;
        case 6: // PUBREL for a QoS 2 message to us: answer PUBCOMP
          this.send(new Uint8Array([0x70, 2, ...u16(id)]));
          break;
        case 9: { // SUBACK
          const filter = this.pendingSubs.get(id);
          this.pendingSubs.delete(id);
          const code = body[2];
          if (code === 0x80) this.emit("error", `subscription to ${filter} refused`);
          break;
        }
        default: // PUBACK, PUBCOMP, UNSUBACK, PINGRESP: nothing to do
          break;
      }
    }
  }

  window.ShoalMqtt = { MqttWsClient };
})();
