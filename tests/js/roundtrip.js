// MQTT.js round trip for the shoal-tests ws/wss suite.
// Usage: node roundtrip.js URL [CA_FILE] [PROTOCOL_VERSION]
// Connects, subscribes, publishes a QoS 1 message to itself, and prints
// "received <topic> <payload>" once it comes back. Exits 1 on any error or after 10 s.
'use strict';
const fs = require('fs');
const mqtt = require('mqtt');

const [url, caFile, version] = process.argv.slice(2);
const options = {
  clientId: `mqttjs-${process.pid}`,
  protocolVersion: Number(version || 4),
  reconnectPeriod: 0,
  connectTimeout: 5000,
};
if (caFile) {
  options.ca = fs.readFileSync(caFile);
  options.rejectUnauthorized = true;
}
const topic = `js/${process.pid}`;
const timer = setTimeout(() => fail('timed out'), 10000);

function fail(why) {
  console.error(`mqtt.js: ${why}`);
  process.exit(1);
}

let done = false;
const client = mqtt.connect(url, options);
// After DISCONNECT the broker may close the socket before the WebSocket close
// handshake ends; an error then is not a failure of the round trip.
client.on('error', (e) => done || fail(e.message));
client.on('connect', () => {
  client.subscribe(topic, { qos: 1 }, (err) => {
    if (err) return fail(`subscribe: ${err.message}`);
    client.publish(topic, `hello over ${url.split(':')[0]}`, { qos: 1 });
  });
});
client.on('message', (t, payload) => {
  console.log(`received ${t.split('/')[0]} ${payload.toString()}`);
  clearTimeout(timer);
  done = true;
  client.end(false, () => process.exit(0));
});
