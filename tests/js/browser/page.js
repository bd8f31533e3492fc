// Runs in the page: one MQTT.js round trip over the WebSocket URL given as ?url=.
'use strict';
(function () {
  const url = new URLSearchParams(location.search).get('url');
  const topic = 'browser/' + Math.random().toString(16).slice(2);
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000 });
  let done = false;
  client.on('error', (e) => { if (!done) document.title = 'error: ' + e.message; });
  client.on('close', () => { if (!done) document.title = 'error: closed'; });
  client.on('connect', () => {
    client.subscribe(topic, { qos: 1 }, (err) => {
      if (err) { document.title = 'error: subscribe ' + err.message; return; }
      client.publish(topic, 'hello from the browser', { qos: 1 });
    });
  });
  client.on('message', (t, payload) => {
    done = true;
    document.title = 'received ' + payload.toString();
    client.end();
  });
})();
