"use strict";
// The run's live page. Once let in (page.js: the token), it follows /events (Server-Sent
// Events: settings, a snapshot each second with what is new, final, end) and draws what
// it gets. Text from events (titles, ids, worker names) only ever goes in as text.
(function () {
  const { $, count, seconds, setStatus, access, element, row, pairs, describe, colour, plot } = window.StreamPage;
  const MAX_POINTS = 4000; // latency points kept, over the whole run
  const MAX_RATES = 3600; // rate samples kept (an hour, one a second)
  const GIVE_UP_AFTER = 10; // failed reconnections in a row (the server asks for one every 2 s)
  const data = { live: null, rates: [], latency: [], settings: {}, threshold: 2, finished: false };

  function follow() {
    const source = new EventSource(access.withToken("events"));
    source.addEventListener("settings", (e) => takeSettings(JSON.parse(e.data)));
    source.addEventListener("snapshot", (e) => {
      const message = JSON.parse(e.data);
      data.rates = data.rates.concat(message.rates).slice(-MAX_RATES);
      if (message.latency.length) {
        // An event's ideal may come in after later events were written: keep them sorted by time.
        data.latency = squeeze(data.latency.concat(message.latency).sort((a, b) => a[0] - b[0]));
      }
      data.live = message.live;
      if (!data.finished) setStatus("live", "live");
      render();
    });
    source.addEventListener("final", (e) => showFinal(JSON.parse(e.data)));
    source.addEventListener("end", (e) => {
      source.close(); // the run is over: do not reconnect to a server that is going away
      if (!JSON.parse(e.data).final) setStatus("stopped", "the run stopped");
    });
    let failures = 0;
    source.addEventListener("open", () => (failures = 0));
    source.onerror = () => {
      failures += 1;
      if (source.readyState === EventSource.CLOSED) {
        setStatus("stopped", "disconnected");
        access.open("run", follow).catch(() => setStatus("stopped", "disconnected")); // a token refused now?
      } else if (failures >= GIVE_UP_AFTER) {
        source.close(); // the run is gone (killed?): stop knocking
        setStatus("stopped", "the run is gone");
      } else {
        setStatus("reconnecting", "reconnecting…");
      }
    };
  }

  // Past MAX_POINTS, halve the latency points: of each two neighbours keep the slower, so
  // the chart still spans the whole run and no spike is lost.
  function squeeze(points) {
    if (points.length <= MAX_POINTS) return points;
    const kept = [];
    for (let i = 0; i < points.length; i += 2) {
      const [a, b] = [points[i], points[i + 1]];
      kept.push(b && b[2] > a[2] ? b : a);
    }
    return kept;
  }

  // -- what the page shows ---------------------------------------------------------------

  function render() {
    const live = data.live;
    if (!live) return;
    const rate = latestRate();
    $("received").textContent = count(live.received);
    $("written").textContent = count(live.written);
    $("received-rate").textContent = rate ? `${rate.received.toFixed(0)} /s` : "";
    $("written-rate").textContent = rate ? `${rate.written.toFixed(0)} /s` : "";
    $("errors").textContent = count(live.errors);
    $("run-time").textContent = `after ${seconds(live.at_s)}`;
    $("in-flight").textContent = `${count(live.in_flight)} / ${count(live.window)}`;
    $("window-bar").value = live.window ? live.in_flight / live.window : 0;
    $("done-waiting").textContent = count(live.done_waiting);
    $("latency").textContent = live.written ? `${seconds(live.latency_s.p50)} / ${seconds(live.latency_s.p99)}` : "–";
    $("latency-max").textContent = live.written ? `max ${seconds(live.latency_s.max)}` : "";
    showHead(live.head);
    showWorkers(live);
    showSettings();
    drawCharts();
  }

  function showHead(head) {
    const flagged = head != null && head.at_head_s > data.threshold; // the line has not moved for that long
    $("head").classList.toggle("flagged", flagged);
    $("head-flag").hidden = !flagged;
    $("head-none").hidden = head != null;
    $("head-detail").hidden = head == null;
    if (!head) return;
    $("head-flag").textContent = `Holding the line for ${seconds(head.at_head_s)}: past the ${data.threshold} s threshold`;
    $("head-offset").textContent = head.offset;
    $("head-id").textContent = head.id == null ? "–" : String(head.id);
    $("head-title").textContent = head.title == null ? "–" : head.title;
    $("head-age").textContent = `${seconds(head.age_s)} since read, ${seconds(head.at_head_s)} at the head`;
    const where = head.worker ? ` on ${head.worker}` : "";
    const running = head.running_s != null ? ` for ${seconds(head.running_s)}` : "";
    const attempts = head.attempts ? ` (${head.attempts} failed attempts)` : "";
    $("head-state").textContent = head.state + where + running + attempts;
    $("head-behind").textContent = `${count(head.done_behind)} finished results wait for it`;
  }

  function showWorkers(live) {
    const names = Object.keys(live.workers).sort();
    const started = data.settings.workers;
    $("worker-count").textContent =
      `${names.length} processes answered in the last minute` + (started ? `; ${started} started by the run` : "");
    const recent = new Map();
    for (const [offset, worker] of live.recent) recent.set(worker, (recent.get(worker) || []).concat(offset));
    const rows = names.map((name) => {
      const seen = live.workers[name];
      const busy = live.at_s > 0 ? Math.min(1, seen.busy_s / live.at_s) : 0; // share of the run's time
      const meter = element("meter", null, { min: 0, max: 1, value: busy });
      return row([
        name,
        count(seen.events),
        { nodes: [meter, ` ${(busy * 100).toFixed(0)} %`], className: "busy" },
        { text: seen.on ? `${seen.on.offset}, for ${seconds(seen.on.for_s)}` : "–", className: "on" },
        { text: (recent.get(name) || []).join(" "), className: "offsets" },
      ]);
    });
    $("workers").tBodies[0].replaceChildren(...rows);
  }

  function takeSettings(settings) {
    data.settings = settings.run;
    data.threshold = settings.page.head_threshold_s;
    $("head-threshold").textContent = `(flagged once the line has not moved for ${data.threshold} s)`;
    $("mode").textContent = settings.run.mode ? `${settings.run.mode}: ${settings.run.input || ""}` : "";
    showSettings();
  }

  // The run's settings, and how batching goes now (it adapts to the measured run times).
  function showSettings() {
    const entries = Object.entries(data.settings).map(([key, value]) => [key.replaceAll("_", " "), describe(value)]);
    const live = data.live;
    if (live) {
      const now = { batch_size: live.batch_size, tasks_out: live.batches_out, mean_event_run_ms: live.mean_event_run_ms };
      entries.push(["batches now", describe({ ...now, handoff_ms: live.handoff_ms })]);
    }
    pairs($("settings"), entries);
  }

  function showFinal(report) {
    const figures = [
      ["events", count(report.events)],
      ["errors", count(report.errors)],
      ["wall time", seconds(report.wall_s)],
      ["span", seconds(report.span_s)],
      ["ideal span", seconds(report.ideal_span_s)],
      ["efficiency", report.efficiency == null ? "–" : `${(report.efficiency * 100).toFixed(1)} %`],
      ["throughput", report.events_per_s == null ? "–" : `${report.events_per_s.toFixed(1)} events/s`],
      ["latency p50 / p99 / max", ["p50", "p99", "max"].map((q) => seconds(report.latency_s?.[q])).join(" / ")],
    ];
    pairs($("final-figures"), figures);
    $("final-report").textContent = JSON.stringify(report, null, 2);
    $("final").hidden = false;
    data.finished = true;
    setStatus("finished", "finished");
    render();
  }

  // -- charts ------------------------------------------------------------------------------

  function latestRate() {
    const r = data.rates;
    if (r.length < 2) return null;
    const [a, b] = [r[r.length - 2], r[r.length - 1]];
    const dt = b[0] - a[0] || 1;
    return { received: (b[1] - a[1]) / dt, written: (b[2] - a[2]) / dt };
  }

  function drawCharts() {
    // Rate samples, about one a second: [at s, received, written, in flight, done waiting,
    // lowest and highest latency of the lines written since the sample before].
    const r = data.rates;
    const perSecond = (i) => r.slice(1).map((b, n) => [b[0], (b[i] - r[n][i]) / (b[0] - r[n][0] || 1)]);
    plot($("rates-chart"), [
      { points: perSecond(1), colour: colour("received") },
      { points: perSecond(2), colour: colour("written") },
    ]);
    const live = data.live;
    const now = [live.at_s, live.received, live.written, live.in_flight, live.done_waiting]; // the line ends now
    const states = r.length && now[0] > r[r.length - 1][0] ? r.concat([now]) : r;
    const edges = states.length ? [states[0][0], states[states.length - 1][0]] : [];
    plot($("window-chart"), [
      { points: states.map((s) => [s[0], s[3]]), colour: colour("in-flight"), steps: true },
      { points: states.map((s) => [s[0], s[4]]), colour: colour("done-waiting"), steps: true },
      { points: edges.map((x) => [x, live.window]), colour: colour("window"), dash: true },
    ]);
    // Measured: the range of each second's lines, live. Ideal: each event's, once known (in
    // file mode the ideal runs up to a window behind).
    const written = r.filter((s) => s[6] != null);
    plot($("latency-chart"), [
      { points: written.map((s) => [s[0], s[5]]), colour: colour("measured"), thin: true },
      { points: written.map((s) => [s[0], s[6]]), colour: colour("measured") },
      { points: data.latency.map((p) => [p[0], p[3]]), colour: colour("ideal"), dash: true },
    ]);
  }

  window.addEventListener("resize", () => data.live && drawCharts());
  access.open("run", follow).catch((error) => setStatus("stopped", `error: ${error}`));
})();
