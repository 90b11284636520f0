// Independent peer: @fluent-org/logger's FluentServer prints each received entry as a JSON line.
// usage: node server.js [SHARED_KEY]    first line printed: "LISTENING <port>"
"use strict";
const { FluentServer } = require("@fluent-org/logger");

async function main() {
  const sharedKey = process.argv[2];
  const options = { listenOptions: { port: 0, host: "127.0.0.1" } };
  if (sharedKey) {
    options.security = { serverHostname: "node-interop-server", sharedKey, authorize: false, userDict: {} };
  }
  const server = new FluentServer(options);
  server.on("entry", (tag, time, record) => {
    const t = typeof time === "number" ? [Math.floor(time), 0] : [time.epoch, time.nano];
    process.stdout.write(JSON.stringify({ tag, time: t, record }) + "\n");
  });
  await server.listen();
  process.stdout.write(`LISTENING ${server.port}\n`);
  process.on("SIGTERM", async () => {
    await server.close();
    process.exit(0);
  });
}

main().catch((err) => {
  process.stderr.write(`server failed: ${err}\n`);
  process.exit(1);
});
