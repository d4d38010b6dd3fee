// One official client draining a replay as fast as the server sends it.
// Usage: node rate.mjs socket.io|sse URL TOKEN
//   socket.io: socket.io-client as a plain RCStream subscriber ("*", one `change` per event);
//   sse: the npm `eventsource` client on URL/v2/stream/recentchange.
// Prints {"events": N, "seconds": S}: from the first event to `end`.
import { io } from "socket.io-client";
import { EventSource } from "eventsource";

const [transport, url, token] = process.argv.slice(2);
let events = 0;
let first = null;
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 600000);

function count() {
  if (first === null) first = process.hrtime.bigint();
  events += 1;
}

function done(close) {
  const seconds = Number(process.hrtime.bigint() - first) / 1e9;
  console.log(JSON.stringify({ events, seconds }));
  clearTimeout(timer);
  close();
}

if (transport === "socket.io") {
  const socket = io(`${url}/rc`, { transports: ["websocket"], auth: { token }, reconnection: false });
  socket.on("connect", () => socket.emit("subscribe", "*"));
  socket.on("change", count);
  socket.on("end", () => done(() => socket.disconnect()));
  socket.on("connect_error", (err) => { console.error(err.message); process.exit(2); });
} else {
  const source = new EventSource(`${url}/v2/stream/recentchange?token=${encodeURIComponent(token)}`);
  source.addEventListener("message", count);
  source.addEventListener("end", () => done(() => source.close()));
  source.addEventListener("error", (event) => { console.error(event.message); process.exit(2); });
}
