"use strict";
// The replay server's status page: GET /status once a second (each request after the last
// answer, never piling up), drawn as cards, a chart and a table of clients. Filters and
// addresses come from clients: untrusted, so they only ever go in as text.
(function () {
  const { $, count, seconds, setStatus, access, element, row, pairs, describe, colour, plot } = window.StreamPage;
  const EVERY_MS = 1000;
  const MOST_MS = 10000; // back off to this while the server does not answer
  const MAX_SAMPLES = 3600;
  const KNOWN = new Set(["async_mode", "uptime_s", "recording", "events_sent", "clients"]);
  const data = { sent: [], opened: performance.now(), delay: EVERY_MS };

  async function poll() {
    let response;
    try {
      response = await fetch("status", { cache: "no-store", headers: access.headers() });
    } catch (error) {
      return retry(`cannot reach the server (${error.message})`);
    }
    if (response.status === 401) return access.ask(); // the token changed, or /access is not served
    if (!response.ok) return retry(`the server answered ${response.status}`);
    show(await response.json());
    data.delay = EVERY_MS;
    setStatus("live", "live");
    setTimeout(poll, EVERY_MS);
  }

  function retry(why) {
    setStatus("reconnecting", why);
    data.delay = Math.min(MOST_MS, data.delay * 2);
    setTimeout(poll, data.delay);
  }

  function show(status) {
    const clients = status.clients || [];
    const recording = status.recording || {};
    $("recording").textContent = recording.path || "";
    $("clients-count").textContent = count(clients.length);
    const transports = new Map();
    for (const client of clients) transports.set(client.transport, (transports.get(client.transport) || 0) + 1);
    $("transports").textContent = [...transports].map(([name, n]) => `${n} ${name}`).join(", ") || "none";
    $("events-sent").textContent = count(status.events_sent);
    $("recording-events").textContent = `${count(recording.events)} events`;
    $("recording-loop").textContent = recording.loop ? "replayed in a loop" : "replayed once per subscriber";
    $("uptime").textContent = seconds(status.uptime_s);
    $("async-mode").textContent = status.async_mode ? `${status.async_mode} shell` : "";
    $("held").textContent = count(clients.filter((c) => room(c.window) === 0).length);
    const worst = Math.max(-1, ...clients.map((c) => (c.pacing_error_ms && c.pacing_error_ms.p99) ?? -1));
    $("pacing").textContent = worst < 0 ? "–" : `${worst.toFixed(1)} ms`;
    $("updated").textContent = `(as of ${new Date().toLocaleTimeString("en-GB")})`;
    $("no-clients").hidden = clients.length > 0;
    $("clients").tBodies[0].replaceChildren(...clients.map(clientRow));
    const extra = Object.entries(status).filter(([key]) => !KNOWN.has(key));
    $("more-panel").hidden = !extra.length;
    pairs($("more"), extra.map(([key, value]) => [key.replaceAll("_", " "), describe(value)]));
    track(status.events_sent);
  }

  // Room left in a client's window: unacknowledged events for a client that acks, unwritten
  // packets for one that cannot (null: nothing holds it here, e.g. an event stream).
  function room(win) {
    if (!win) return null;
    const held = win.unacknowledged || win.unwritten;
    return held == null ? null : Math.max(0, win.size - held);
  }

  function clientRow(client) {
    const filter = client.filter || {};
    const { realtime, speed, ...which } = filter;
    const win = client.window || {};
    const held = win.unacknowledged || win.unwritten || 0;
    const bar = element("meter", null, { min: 0, max: win.size || 1, value: held });
    const errors = client.pacing_error_ms || {};
    return row([
      String(client.id).slice(0, 8),
      client.transport,
      client.address,
      seconds(client.connected_s),
      { text: client.filter ? describe(which) : "not subscribed", className: "filter" },
      client.filter ? (realtime ? `paced × ${speed}` : "as fast as it reads") : "–",
      count(client.offset),
      client.acked == null ? "–" : count(client.acked),
      { nodes: [bar, ` ${count(held)} / ${count(win.size)}`], className: "busy" },
      count(client.sent),
      errors.count ? ["p50", "p99", "max"].map((q) => errors[q].toFixed(1)).join(" / ") + " ms" : "–",
    ]);
  }

  function track(sent) {
    if (sent == null) return;
    const at = (performance.now() - data.opened) / 1000;
    data.sent = data.sent.concat([[at, sent]]).slice(-MAX_SAMPLES);
    const s = data.sent;
    const rates = s.slice(1).map((b, n) => [b[0], Math.max(0, b[1] - s[n][1]) / (b[0] - s[n][0] || 1)]);
    $("send-rate").textContent = rates.length ? `${rates[rates.length - 1][1].toFixed(0)} /s now` : "";
    plot($("sent-chart"), [{ points: rates, colour: colour("written") }]);
  }

  access.open("server", poll).catch((error) => setStatus("stopped", `error: ${error}`));
})();
