"use strict";
// What the run's page (dashboard.js) and the replay server's status page (status.js)
// share: the token prompt, text-only DOM helpers, and line charts drawn on canvas by
// hand. No libraries. Text from the wire is untrusted: it only ever goes in through
// textContent, never as HTML.
window.StreamPage = (function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "stream-processor-token";
  const count = (n) => (n == null ? "–" : Number(n).toLocaleString("en"));
  const seconds = (s) => (s == null ? "–" : s < 10 ? `${s.toFixed(2)} s` : `${s.toFixed(1)} s`);

  function setStatus(state, text) {
    const pill = $("status");
    pill.dataset.state = state;
    pill.textContent = text;
  }

  // -- the token -----------------------------------------------------------------------------
  // The page holds no data; with a token set on the server, every data endpoint needs it.
  // `access` (no data, always 200) says whether one is needed and whether ours is right, so
  // asking never shows up as a failed request. The prompt is #token-form; the page's data
  // lives in the element `contentId`, hidden while the prompt shows.

  const access = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    withToken(path) {
      return this.token ? `${path}?token=${encodeURIComponent(this.token)}` : path;
    },
    headers() {
      return this.token ? { Authorization: `Bearer ${this.token}` } : {};
    },
    // Call `onOpen` once the server lets us in; until then, prompt for the token.
    async open(contentId, onOpen) {
      this.contentId = contentId;
      this.onOpen = onOpen;
      const response = await fetch(this.withToken("access"), { cache: "no-store" });
      const answer = response.ok ? await response.json() : {}; // a server without /access: just try
      if (answer.token_needed && !answer.accepted) this.ask();
      else this.admitted();
    },
    ask() {
      $("token-form").hidden = false;
      $("token-refused").hidden = !this.token;
      $(this.contentId).hidden = true;
      setStatus("token", "needs its token");
      $("token").focus();
    },
    admitted() {
      $("token-form").hidden = true;
      $(this.contentId).hidden = false;
      this.onOpen();
    },
  };

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    access.token = $("token").value;
    sessionStorage.setItem(TOKEN_KEY, access.token);
    access.open(access.contentId, access.onOpen).catch((error) => setStatus("stopped", `error: ${error}`));
  });

  // -- DOM, text only ------------------------------------------------------------------------

  function element(tag, text, properties) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    return Object.assign(node, properties || {});
  }

  // A table row; a cell is text, or {text or nodes, className}.
  function row(cells) {
    const tr = document.createElement("tr");
    for (const cell of cells) {
      const td = document.createElement("td");
      if (cell != null && typeof cell === "object") {
        td.className = cell.className || "";
        td.append(...(cell.nodes || [cell.text]));
      } else {
        td.textContent = cell == null ? "–" : cell;
      }
      tr.append(td);
    }
    return tr;
  }

  function pairs(list, entries) {
    list.replaceChildren(...entries.flatMap(([key, value]) => [element("dt", key), element("dd", value)]));
  }

  function describe(value) {
    if (value == null) return "–";
    if (Array.isArray(value)) return value.map(describe).join(", ") || "–";
    if (typeof value === "object") {
      const known = Object.entries(value).filter(([, v]) => v != null);
      return known.map(([k, v]) => `${k.replaceAll("_", " ")} ${describe(v)}`).join(", ") || "–";
    }
    return String(value);
  }

  // -- charts --------------------------------------------------------------------------------

  // A colour of the stylesheet (its custom properties), so a legend and its line agree.
  const colour = (name) => getComputedStyle(document.documentElement).getPropertyValue(`--${name}`).trim();

  // Lines on a canvas sized to its box (sharp on any screen), y from 0, with a few ticks.
  // A series is {points: [[x, y]...], colour, dash, steps, thin}; a y of null breaks the line.
  function plot(canvas, series) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const all = series.flatMap((s) => s.points).filter((p) => p[1] != null && Number.isFinite(p[1]));
    const left = 44, right = 8, top = 8, bottom = 18;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#5b6470";
    if (!all.length) {
      ctx.fillText("no data yet", left, top + 14);
      return;
    }
    let x0 = Infinity, x1 = -Infinity, yMax = 0;
    for (const [x, y] of all) {
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      yMax = Math.max(yMax, y);
    }
    const y1 = niceCeiling(yMax);
    const X = (x) => left + ((w - left - right) * (x - x0)) / (x1 - x0 || 1);
    const Y = (y) => h - bottom - ((h - top - bottom) * y) / y1;
    ctx.strokeStyle = "#e3e6ea";
    ctx.lineWidth = 1;
    for (const y of [0, y1 / 2, y1]) {
      ctx.beginPath();
      ctx.moveTo(left, Y(y));
      ctx.lineTo(w - right, Y(y));
      ctx.stroke();
      ctx.fillText(tick(y), 2, Y(y) + 4);
    }
    ctx.fillText(`${x0.toFixed(0)} s`, left, h - 4);
    const end = `${x1.toFixed(0)} s`;
    ctx.fillText(end, w - right - ctx.measureText(end).width, h - 4);
    for (const s of series) {
      ctx.strokeStyle = s.colour;
      ctx.lineWidth = s.thin ? 0.75 : 1.5;
      ctx.setLineDash(s.dash ? [5, 4] : []);
      ctx.beginPath();
      let last = null;
      for (const [x, y] of s.points) {
        if (y == null || !Number.isFinite(y)) {
          last = null;
          continue;
        }
        if (last == null) ctx.moveTo(X(x), Y(y));
        else if (s.steps) {
          ctx.lineTo(X(x), Y(last));
          ctx.lineTo(X(x), Y(y));
        } else ctx.lineTo(X(x), Y(y));
        last = y;
      }
      ctx.stroke();
      const shown = s.points.filter((p) => p[1] != null && Number.isFinite(p[1]));
      if (shown.length === 1) {
        ctx.fillStyle = s.colour; // a line of one point is not seen: a dot is
        ctx.beginPath();
        ctx.arc(X(shown[0][0]), Y(shown[0][1]), 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
    ctx.setLineDash([]);
  }

  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((m) => m * power).find((v) => v >= value);
  }

  function tick(value) {
    return value >= 1000 ? `${(value / 1000).toFixed(value % 1000 ? 1 : 0)}k` : String(+value.toPrecision(3));
  }

  return { $, count, seconds, setStatus, access, element, row, pairs, describe, colour, plot };
})();
