// Records a V8 CPU profile of one workerd service over its inspector (Chrome DevTools Protocol).
// usage: node [--experimental-websocket] cdp.mjs PORT SERVICE SECONDS OUT.cpuprofile
// Prints "profiling" once sampling runs; writes OUT when SECONDS have passed.
import { writeFileSync } from "node:fs";

const [port, service, seconds, out] = process.argv.slice(2);
if (typeof WebSocket !== "function") {
  console.error("cdp.mjs: this Node has no WebSocket (Node 20: run with --experimental-websocket)");
  process.exit(2);
}
const list = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
const target = list.find((t) => t.title === service || (t.webSocketDebuggerUrl || "").endsWith(`/${service}`));
if (!target) {
  console.error(`cdp.mjs: no inspector target ${service} (have: ${list.map((t) => t.title).join(", ")})`);
  process.exit(2);
}
const ws = new WebSocket(target.webSocketDebuggerUrl);
let next = 0;
const pending = new Map();
const send = (method, params = {}) =>
  new Promise((resolve) => {
    next += 1;
    pending.set(next, resolve);
    ws.send(JSON.stringify({ id: next, method, params }));
  });
ws.onmessage = (event) => {
  const msg = JSON.parse(event.data);
  if (msg.id && pending.has(msg.id)) {
    pending.get(msg.id)(msg);
    pending.delete(msg.id);
  }
};
await new Promise((resolve, reject) => {
  ws.onopen = resolve;
  ws.onerror = reject;
});
await send("Profiler.enable");
// 100 µs: fine enough for a request that costs about a millisecond.
await send("Profiler.setSamplingInterval", { interval: 100 });
await send("Profiler.start");
console.log("profiling");
await new Promise((resolve) => setTimeout(resolve, Number(seconds) * 1000));
const stopped = await send("Profiler.stop");
writeFileSync(out, JSON.stringify(stopped.result.profile));
ws.close();
process.exit(0);
