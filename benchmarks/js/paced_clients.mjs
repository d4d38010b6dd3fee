// Many official clients at once, each subscribed to a paced (real-time) replay of everything:
// half socket.io-client (plain RCStream subscribers), half the npm `eventsource` client.
// Usage: node paced_clients.mjs URL TOKEN CLIENTS
// Prints {"clients": N, "events": total received} once every client has had its `end`.
import { io } from "socket.io-client";
import { EventSource } from "eventsource";

const [url, token, clientsText] = process.argv.slice(2);
const clients = Number(clientsText);
let events = 0;
let ended = 0;
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 900000);

function finished() {
  ended += 1;
  if (ended === clients) {
    console.log(JSON.stringify({ clients, events }));
    clearTimeout(timer);
    process.exit(0);
  }
}

for (let i = 0; i < clients; i += 1) {
  if (i % 2 === 0) {
    const socket = io(`${url}/rc`, { transports: ["websocket"], auth: { token }, reconnection: false, forceNew: true });
    socket.on("connect", () => socket.emit("subscribe", { wikis: "*", realtime: true, speed: 1 }));
    socket.on("change", () => { events += 1; });
    socket.on("end", () => { socket.disconnect(); finished(); });
    socket.on("connect_error", (err) => { console.error(err.message); process.exit(2); });
  } else {
    const query = `realtime=true&speed=1&token=${encodeURIComponent(token)}`;
    const source = new EventSource(`${url}/v2/stream/recentchange?${query}`);
    source.addEventListener("message", () => { events += 1; });
    source.addEventListener("end", () => { source.close(); finished(); });
    source.addEventListener("error", (event) => { console.error(event.message); process.exit(2); });
  }
}
