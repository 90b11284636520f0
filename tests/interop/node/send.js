// Independent peer: @fluent-org/logger's FluentClient sends events from a JSON file and waits for acks.
// usage: node send.js HOST PORT EVENTS.json MODE [SHARED_KEY]
// EVENTS.json: [[seconds, nanoseconds, record], ...]
"use strict";
const fs = require("fs");
const { FluentClient, EventTime } = require("@fluent-org/logger");

async function main() {
  const [host, port, file, mode, sharedKey] = process.argv.slice(2);
  const events = JSON.parse(fs.readFileSync(file, "utf8"));
  const options = {
    eventMode: mode,
    socket: { host, port: Number(port), timeout: 10000 },
    ack: { ackTimeout: 20000 },
    flushInterval: 0,
  };
  if (sharedKey) {
    options.security = { clientHostname: "node-interop-client", sharedKey };
  }
  const client = new FluentClient("audit", options);
  await Promise.all(events.map(([s, ns, rec]) => client.emit(rec, new EventTime(s, ns))));
  await client.disconnect();
  process.stdout.write(`acked ${events.length}\n`);
}

main().catch((err) => {
  process.stderr.write(`send failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
