"use strict";
// The streams page (/v2/ui), as EventStreams has one: the stream names come from /?spec,
// and the ones chosen are read with an EventSource, the newest events on top. Events are
// untrusted: they only ever go in as text.
(function () {
  const KEEP = 50; // events shown
  const $ = (id) => document.getElementById(id);
  let source = null;
  let received = 0;
  let listed = false;

  function setStatus(state, text) {
    $("status").dataset.state = state;
    $("status").textContent = text;
  }

  // The spec names the streams served: with a token set on the server, it needs the token
  // too. /access (no data, always 200) says whether ours will do, so asking never shows up as
  // a failed request.
  const token = () => $("token").value;
  const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {}); // not in a URL, which logs keep

  async function listStreams() {
    const headers = authHeaders();
    const access = await (await fetch("../access", { cache: "no-store", headers })).json();
    if (access.token_needed && !access.accepted) {
      $("token").focus();
      return setStatus("token", token() ? "the token was refused" : "needs its token: enter it, then Open");
    }
    const response = await fetch("../?spec", { cache: "no-store", headers });
    if (!response.ok) return setStatus("reconnecting", `the server answered ${response.status}`);
    const spec = await response.json();
    const names = spec.paths["/v2/stream/{streams}"].get.parameters[0].schema.items.enum;
    $("streams").append(...names.map(choice));
    listed = true;
    setStatus("live", `${names.length} streams`);
  }

  function choice(name) {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    box.checked = name === "recentchange";
    label.append(box, ` ${name} `);
    return label;
  }

  async function open(event) {
    event.preventDefault();
    if (!listed) await listStreams(); // with the token just entered
    if (!listed) return;
    if (source) source.close();
    const names = [...$("streams").querySelectorAll("input:checked")].map((box) => box.value);
    if (!names.length) return setStatus("reconnecting", "choose a stream");
    const query = token() ? `?token=${encodeURIComponent(token())}` : ""; // EventSource sends no headers
    source = new EventSource(`stream/${names.map(encodeURIComponent).join(",")}${query}`);
    source.onopen = () => setStatus("live", `reading ${names.join(", ")}`);
    source.onerror = () => setStatus("reconnecting", "the stream dropped: reconnecting");
    source.addEventListener("message", (message) => show(message.data));
    source.addEventListener("end", () => {
      source.close();
      setStatus("done", "the replay ended");
    });
  }

  function show(data) {
    const item = document.createElement("li");
    item.textContent = data;
    $("events").prepend(item);
    while ($("events").children.length > KEEP) $("events").lastChild.remove();
    $("count").textContent = `(${++received} received)`;
  }

  const failed = (error) => setStatus("reconnecting", `cannot read /?spec (${error.message})`);
  $("streams-form").addEventListener("submit", (event) => open(event).catch(failed));
  listStreams().catch(failed);
})();
