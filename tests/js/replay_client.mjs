// The official Socket.IO JavaScript client against the replay server.
// Usage: node replay_client.mjs URL STOP_AFTER
//   subscribes with offsets, disconnects after STOP_AFTER events, reconnects,
//   resubscribes from the next offset, and prints one JSON line per event received
//   ({"offset": N, "id": ID}), then {"end": COUNT} for each `end` event.
import { io } from "socket.io-client";

const [url, stopAfterText] = process.argv.slice(2);
const stopAfter = Number(stopAfterText);
let next = 0;
let resumed = false;
const socket = io(`${url}/rc`, { transports: ["websocket"], reconnection: false });

function subscribe() {
  socket.emit("subscribe", { wikis: ["en.wikipedia.org"], offset: next, with_offsets: true });
}

socket.on("connect", subscribe);
socket.on("change", (change, offset) => {
  console.log(JSON.stringify({ offset, id: change.id }));
  next = offset + 1;
  if (!resumed && next === stopAfter) {
    resumed = true;
    socket.disconnect();
    socket.connect();
  }
});
socket.on("end", (data) => {
  console.log(JSON.stringify({ end: data.count }));
  socket.disconnect();
});
socket.on("connect_error", (err) => {
  console.error(`connect_error: ${err.message}`);
  process.exit(2);
});
setTimeout(() => { console.error("timed out"); process.exit(3); }, 60000);
socket.io.on("close", () => { if (resumed && next > stopAfter) process.exit(0); });
