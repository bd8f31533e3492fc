// MQTT.js from headless Chromium for the shoal-tests ws suite.
// Usage: node browser.js WS_URL
// Serves browser/index.html (and MQTT.js's browser bundle) on a free localhost port,
// opens it in Chromium (CHROMIUM, default /usr/bin/chromium) driven by playwright-core,
// and prints the page's outcome: "received <payload>" and exit 0, or the error and exit 1.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const { chromium } = require('playwright-core');

const wsUrl = process.argv[2];
const files = {
  '/': ['text/html', path.join(__dirname, 'browser', 'index.html')],
  '/page.js': ['text/javascript', path.join(__dirname, 'browser', 'page.js')],
  '/mqtt.min.js': ['text/javascript', path.join(__dirname, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js')],
};

function fail(why) {
  console.error(`browser: ${why}`);
  process.exit(1);
}

const server = http.createServer((req, res) => {
  const entry = files[new URL(req.url, 'http://localhost').pathname];
  if (!entry) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'Content-Type': entry[0] });
  res.end(fs.readFileSync(entry[1]));
});

server.listen(0, '127.0.0.1', async () => {
  const timer = setTimeout(() => fail('timed out'), 30000);
  let browser;
  try {
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      // The test CA is not in Chromium's trust store; the flags after it keep Chromium
      // from reaching for Google's hosts on a closed network.
      args: [
        '--ignore-certificate-errors', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    const page = await browser.newPage();
    const pageUrl = `http://127.0.0.1:${server.address().port}/?url=${encodeURIComponent(wsUrl)}`;
    await page.goto(pageUrl);
    await page.waitForFunction(() => document.title !== 'waiting', null, { timeout: 20000 });
    const title = await page.title();
    console.log(title);
    clearTimeout(timer);
    await browser.close();
    server.close();
    process.exit(title.startsWith('received ') ? 0 : 1);
  } catch (e) {
    if (browser) await browser.close().catch(() => {});
    fail(e.message);
  }
});
