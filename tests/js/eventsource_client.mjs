// The npm `eventsource` client (the WHATWG EventSource for Node) against the event stream.
// Usage: node eventsource_client.mjs URL
//   prints one JSON line per message ({"id": lastEventId, "data": data}), then
//   {"end": {...}} for the `end` event, and exits. A dropped connection is EventSource's
//   own business: it reconnects by itself, sending Last-Event-ID.
import { EventSource } from "eventsource";

const [url] = process.argv.slice(2);
const source = new EventSource(url);
const timer = setTimeout(() => { console.error("timed out"); process.exit(3); }, 90000);

source.addEventListener("message", (event) => {
  console.log(JSON.stringify({ id: event.lastEventId, data: event.data }));
});
source.addEventListener("end", (event) => {
  console.log(JSON.stringify({ end: JSON.parse(event.data) }));
  source.close();
  clearTimeout(timer);
});
source.addEventListener("error", (event) => {
  console.error(`reconnecting after: ${event.message ?? "a dropped connection"}`);
});
