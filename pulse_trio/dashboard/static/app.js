// pulse-trio dashboard: polls /api/snapshot and draws the page the path names.
// Read-only; every value from Redis is inserted as text (never as HTML).
"use strict";

const PAGE = (location.pathname.replace(/^\/+/, "") || "pools");
const POLL_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows) {
  if (!rows.length) return el("p", { class: "empty" }, "none");
  return el("table", {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows));
}

function seconds(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + " s";
}

// A small line chart of [secondsAgo, value] points, drawn as SVG.
function chart(points, caption, testid) {
  const width = 260, height = 70, pad = 4;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const last = points.length ? points[points.length - 1][1] : 0;
  if (points.length > 1) {
    const x0 = points[0][0], x1 = points[points.length - 1][0] || 1e-9;
    const ymax = Math.max(1, ...points.map((p) => p[1]));
    const span = (x1 - x0) || 1;
    const coords = points.map((p) => [
      pad + ((p[0] - x0) / span) * (width - 2 * pad),
      height - pad - (p[1] / ymax) * (height - 2 * pad),
    ]);
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", coords.map((c) => c[0].toFixed(1) + "," + c[1].toFixed(1)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#3a78e0");
    line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  const minutes = points.length ? Math.round(-points[0][0] / 60 * 10) / 10 : 0;
  return el("figure", { "data-testid": testid }, svg,
    el("figcaption", {}, `${caption}: ${last} (last ${minutes} min)`));
}

function pools(snapshot) {
  if (!snapshot.pools.length) return [el("p", { class: "empty" }, "no pools found")];
  return snapshot.pools.map((pool) => {
    const jobsOf = {};
    for (const job of pool.jobs) (jobsOf[job.worker_id] = jobsOf[job.worker_id] || []).push(job.key);
    return el("section", { id: "pool-" + pool.name, "data-pool": pool.name },
      el("h2", {}, "pool ", el("code", {}, pool.name)),
      el("span", { class: "meta" }, `layout ${pool.layout}`),
      el("span", { class: "meta" }, `${pool.jobs.length} jobs, ${pool.queued} queued`),
      el("span", { class: "meta" }, `failed: ${pool.failed.join(", ") || "none"}`),
      el("span", { class: "meta" }, `tickers: ${pool.tickers.join(", ") || "none"}`),
      pool.shutting_down ? el("strong", {}, " shutting down") : null,
      el("h3", {}, "nodes"),
      table(["node", "lease left", "heartbeat age", "workers"], pool.nodes.map((node) =>
        el("tr", { id: `node-${pool.name}-${node.id}` },
          el("td", {}, el("code", {}, node.id)),
          el("td", {}, seconds(node.lease_left)),
          el("td", {}, seconds(node.heartbeat_age)),
          el("td", {}, node.workers.map((w) =>
            [el("a", { href: `#worker-${pool.name}-${w}` }, w), " "]))))),
      el("h3", {}, "workers"),
      table(["worker", "node", "heartbeat age", "lease left", "jobs", "job keys"],
        pool.workers.map((worker) =>
          el("tr", { id: `worker-${pool.name}-${worker.id}`, "data-worker": worker.id },
            el("td", {}, el("code", {}, worker.id)),
            el("td", {}, worker.node_id
              ? el("a", { href: `#node-${pool.name}-${worker.node_id}` }, worker.node_id) : "–"),
            el("td", {}, seconds(worker.heartbeat_age)),
            el("td", {}, seconds(worker.lease_left)),
            el("td", { "data-testid": "worker-jobs" }, worker.jobs.length),
            el("td", {}, worker.jobs.map((k) => [el("a", { href: `#job-${pool.name}-${k}` }, k), " "]))))),
      el("h3", {}, "jobs"),
      table(["job", "state", "worker", "failures", "error", "created"], pool.jobs.map((job) =>
        el("tr", { id: `job-${pool.name}-${job.key}`, "data-job": job.key },
          el("td", {}, el("code", {}, job.key)),
          el("td", {}, job.state),
          el("td", { "data-testid": "job-worker" }, job.worker_id
            ? el("a", { href: `#worker-${pool.name}-${job.worker_id}` }, job.worker_id) : "–"),
          el("td", {}, job.failures),
          el("td", {}, job.error),
          el("td", {}, job.created_at)))));
  });
}

function streams(snapshot, series) {
  if (!snapshot.streams.length) return [el("p", { class: "empty" }, "no streams found")];
  return snapshot.streams.map((stream) => el("section",
    { id: "stream-" + stream.name, "data-stream": stream.name },
    el("h2", {}, stream.dead_letter ? "dead-letter stream " : "stream ", el("code", {}, stream.name)),
    el("span", { class: "meta", "data-testid": "stream-length" }, `length ${stream.length}`),
    el("span", { class: "meta" }, `first ${stream.first_id || "–"}`),
    el("span", { class: "meta" }, `last ${stream.last_id || "–"}`),
    el("div", { class: "charts" },
      chart(series.rates[stream.name] || [], "growth (entries/s)", "rate-chart"),
      stream.sinks.map((sink) =>
        chart(series.lags[`${stream.name}/${sink.name}`] || [], `lag of ${sink.name}`, "lag-chart"))),
    el("h3", {}, "sinks"),
    table(["sink", "stream", "consumers", "pending", "lag", "dead letters", "idle", "last delivered"],
      stream.sinks.map((sink) => el("tr", { id: `sink-${stream.name}-${sink.name}`, "data-sink": sink.name },
        el("td", {}, el("code", {}, sink.name)),
        el("td", {}, el("a", { href: `#stream-${stream.name}` }, stream.name)),
        el("td", {}, sink.consumers.map((c) => `${c.name} (${c.pending} pending, idle ${c.idle.toFixed(1)} s)`).join(", ") || "none"),
        el("td", { "data-testid": "sink-pending" }, sink.pending),
        el("td", { "data-testid": "sink-lag" }, sink.lag === null ? "?" : sink.lag),
        el("td", {}, sink.dead_letters),
        el("td", {}, seconds(sink.idle)),
        el("td", {}, sink.last_delivered_id))))));
}

function maps(snapshot) {
  if (!snapshot.maps.length) return [el("p", { class: "empty" }, "no maps found")];
  return snapshot.maps.map((map) => el("section", { id: "map-" + map.name, "data-map": map.name },
    el("h2", {}, "map ", el("code", {}, map.name)),
    el("span", { class: "meta", "data-testid": "map-size" }, `${map.size} keys`),
    el("span", { class: "meta" }, `revision ${map.revision}`),
    table(["key", "value"], Object.entries(map.values).map(([key, value]) =>
      el("tr", { "data-key": key }, el("td", {}, el("code", {}, key)),
        el("td", {}, value.length > 200 ? value.slice(0, 200) + "…" : value))))));
}

const RENDER = { pools, streams, maps };

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/snapshot", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    if (data.snapshot) {
      const hash = location.hash;
      const content = document.getElementById("content");
      content.replaceChildren(...RENDER[PAGE](data.snapshot, data.series));
      if (hash && !content.dataset.scrolled) {
        const target = document.getElementById(decodeURIComponent(hash.slice(1)));
        if (target) { target.scrollIntoView(); content.dataset.scrolled = "1"; }
      }
      status.textContent = "updated " + data.snapshot.taken_at.replace("T", " ").slice(0, 19) + " UTC";
      document.body.dataset.updated = data.snapshot.taken_at;
    }
    status.classList.toggle("error", Boolean(data.error));
    if (data.error) status.textContent = "Redis: " + data.error;
  } catch (error) {
    status.textContent = "dashboard unreachable: " + error.message;
    status.classList.add("error");
  }
  setTimeout(refresh, POLL_MS);
}

for (const link of document.querySelectorAll("nav a")) {
  if (link.dataset.page === PAGE) link.classList.add("active");
}
if (!(PAGE in RENDER)) {
  document.getElementById("content").textContent = "unknown page";
} else {
  refresh();
}
