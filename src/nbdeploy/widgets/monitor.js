// Renders the /monitor document held in the "snapshot" traitlet. All numbers come from the
// kernel; this file only draws them.

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function fmt(value, digits = 1, unit = "") {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(digits)}${unit}`;
}

// a sparkline whose measured points are dots: one bucket of data shows from the first seconds
// (a line needs two), and a gap (no request in a bucket) stays a gap
function spark(values, width = 180, height = 28) {
  const nums = values.map((v) => (v === null || v === undefined ? null : Number(v)));
  const top = Math.max(1e-9, ...nums.filter((v) => v !== null));
  const step = width / Math.max(1, nums.length - 1);
  const xy = nums.map((v, i) => (v === null ? null : [(i * step).toFixed(1), (height - (v / top) * (height - 4) - 2).toFixed(1)]));
  const points = xy.filter((p) => p !== null).map(([x, y]) => `${x},${y}`).join(" ");
  const dots = xy.map((p, i) => (p === null || nums[i] === 0 ? "" : `<circle cx="${p[0]}" cy="${p[1]}" r="1.8"/>`)).join("");
  return `<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"><polyline points="${points}"/>${dots}</svg>`;
}

// the last measured value of a series (the newest bucket with data)
function latest(values) {
  const seen = (values || []).filter((v) => v !== null && v !== undefined);
  return seen.length ? seen[seen.length - 1] : null;
}

// how long before now a time was (both in seconds; "–" when either is missing)
function ago(ts, now) {
  if (typeof ts !== "number" || typeof now !== "number") return "–";
  const s = Math.max(0, now - ts);
  return s < 90 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`;
}

// a prediction distribution in a few characters: the top classes' shares, or the histogram's counts
function shares(preds) {
  if (!preds || !preds.counts) return "–";
  if (preds.kind === "classes") {
    const total = Object.values(preds.counts).reduce((a, b) => a + b, 0) || 1;
    return Object.entries(preds.counts).sort((a, b) => b[1] - a[1]).slice(0, 3)
      .map(([name, n]) => `${String(name).slice(0, 12)} ${((100 * n) / total).toFixed(0)}%`).join(" ");
  }
  return preds.counts.length ? preds.counts.join(" ") : "–";
}

function tile(key, label, value) {
  return `<div class="nbd-mon-tile" data-tile="${key}"><div class="label">${esc(label)}</div><div class="value">${esc(value)}</div></div>`;
}

function draw(model, el) {
  const doc = model.get("snapshot") || {};
  const status = model.get("status");
  const windowName = model.get("window");
  const win = (doc.windows || {})[windowName];
  const bad = status !== "live";
  let html = `<div class="nbd-mon-head"><b>${esc(model.get("name"))}</b>
    <span>${esc(doc.ref || "")} · version ${esc(doc.version ?? "–")} · window ${esc(windowName)} ·
      <span class="nbd-mon-age" title="when the server took this snapshot">as of ${esc(utc(doc.now, 19))}${bad ? "" : ` (${esc(ago(doc.now, Date.now() / 1000))})`}</span></span>
    <span class="nbd-mon-status ${bad ? "bad" : "live"}" data-status="${esc(status)}">${esc(status)}</span></div>`;
  if (!win) {
    el.innerHTML = `<div class="nbd-mon">${html}<div>waiting for data…</div></div>`;
    return;
  }
  const lat = win.latency_ms || {};
  if (!doc.total_requests) {
    html += `<div class="nbd-mon-empty">No traffic yet: try <code>%deploy predict ${esc(model.get("name"))} --data X.head()</code></div>`;
  }
  html += `<div class="nbd-mon-tiles">
    ${tile("requests", `requests (${windowName})`, win.requests)}
    ${tile("rps", `requests/s (${windowName})`, fmt(win.rps, 2))}
    ${tile("p50", `p50 (${windowName})`, fmt(lat.p50, 1, " ms"))}
    ${tile("p95", `p95 (${windowName})`, fmt(lat.p95, 1, " ms"))}
    ${tile("p99", `p99 (${windowName})`, fmt(lat.p99, 1, " ms"))}
    ${tile("errors", `error rate (${windowName})`, fmt(100 * (win.error_rate || 0), 1, "%"))}
    ${tile("version", "version", doc.version ?? "–")}
    ${tile("uptime", "uptime", fmt(doc.uptime_s, 0, " s"))}
    ${tile("total", "total requests", doc.total_requests ?? 0)}
    ${win.accuracy !== null && win.accuracy !== undefined ? tile("accuracy", `live accuracy (${win.labelled})`, fmt(win.accuracy, 3)) : ""}
    ${win.est_accuracy !== null && win.est_accuracy !== undefined ? tile("est_accuracy", `estimated accuracy (${win.est_rows}, before labels)`, `${fmt(win.est_accuracy, 3)} [${fmt(win.est_accuracy_ci[0], 3)}, ${fmt(win.est_accuracy_ci[1], 3)}]`) : ""}
  </div>`;
  const res = win.resources;
  if (res) {
    const priced = res.core_hour_price !== null && res.core_hour_price !== undefined;
    html += `<div class="nbd-mon-tiles nbd-mon-resources">
      ${tile("cpu", `CPU (${windowName}, % of a core)`, fmt(res.cpu_pct, 1, "%"))}
      ${tile("rss", "memory (RSS)", fmt(res.rss_mb, 0, " MB"))}
      ${tile("cpu_per_1k", "CPU s / 1k predictions", fmt(res.cpu_s_per_1k, 3))}
      ${priced ? tile("cost_1m", `cost / 1M predictions (at ${res.core_hour_price} / core-hour)`, fmt(res.cost_per_1m, 4)) : ""}
      ${priced ? tile("cost_day", "cost / day at this rate", fmt(res.cost_per_day, 3)) : ""}
    </div>`;
  }
  const procs = doc.processes || [];
  if (procs.length > 1) {
    const rows = procs
      .map((p) => `<tr data-role="${esc(p.role)}"><td>${esc(p.role)}</td><td>${esc(p.pid)}</td>
        <td>${fmt(p.cpu_pct_1m, 1, "%")}</td><td>${fmt(p.rss_mb, 0, " MB")}</td>
        <td>${fmt(p.predictions_per_cpu_s, 0)}</td></tr>`)
      .join("");
    html += `<h4>processes (CPU over the last minute)</h4><table class="nbd-mon-processes">
      <tr><th>role</th><th>pid</th><th>CPU</th><th>RSS</th><th>predictions / CPU s</th></tr>${rows}</table>`;
  }
  const series = doc.series || { rps: [], p95_ms: [] };
  html += `<div class="nbd-mon-row"><div><h4>traffic (req/s per 10 s, last 10 min; latest ${fmt(latest(series.rps), 1)})</h4>${spark(series.rps || [])}</div>
    <div><h4>p95 latency (ms per 10 s, last 10 min; latest ${fmt(latest(series.p95_ms), 1)})</h4>${spark(series.p95_ms || [])}</div></div>`;
  const preds = win.predictions || {};
  let predRows = "";
  if (preds.kind === "classes") {
    const total = Object.values(preds.counts || {}).reduce((a, b) => a + b, 0) || 1;
    for (const [label, count] of Object.entries(preds.counts || {})) {
      predRows += `<tr><td>${esc(label)}</td><td><span class="bar" style="width:${(120 * count) / total}px"></span></td><td>${fmt((100 * count) / total, 0, "%")}</td></tr>`;
    }
  } else if (preds.counts && preds.counts.length) {
    const top = Math.max(...preds.counts, 1);
    preds.counts.forEach((count, i) => {
      predRows += `<tr><td>${fmt(preds.edges[i], 3)}–${fmt(preds.edges[i + 1], 3)}</td><td><span class="bar" style="width:${(120 * count) / top}px"></span></td><td>${count}</td></tr>`;
    });
  }
  const drift = (win.drift || []).slice().sort((a, b) => (b.psi ?? -1) - (a.psi ?? -1));
  const driftRows = drift
    .map(
      (d) => `<tr data-feature="${esc(d.name)}" data-status="${esc(d.status)}"><td>${esc(d.name)}</td>
      <td><span class="bar" style="width:${Math.min(160, 160 * ((d.psi ?? 0) / 0.5))}px"></span></td>
      <td>${fmt(d.psi, 3)}</td><td>${esc(d.status)}</td></tr>`,
    )
    .join("");
  html += `<div class="nbd-mon-row"><div><h4>predictions (${esc(windowName)})</h4><table>${predRows || "<tr><td>none yet</td></tr>"}</table></div>
    <div><h4>drift vs training (PSI, ${esc(windowName)}) · ${(win.drifted_features || []).length} drifted</h4>
    <table class="nbd-mon-drift">${driftRows || "<tr><td>no profile or no rows</td></tr>"}</table></div></div>`;
  const replicas = Object.entries(doc.replicas || {});
  if (replicas.length) {
    const rows = replicas
      .map(([id, r]) => {
        const w = (r.windows || {})[windowName] || {};
        return `<tr data-replica="${esc(id)}"><td>${esc(id)}</td><td>${esc(String(r.node || "").slice(0, 12))}</td>
        <td>${esc(r.pid)}</td><td>${esc(w.requests ?? 0)}</td><td>${fmt((w.latency_ms || {}).p95, 1, " ms")}</td>
        <td>${fmt(100 * (w.error_rate || 0), 1, "%")}</td><td>${fmt((w.resources || {}).cpu_pct, 0, "%")}</td>
        <td>${fmt((w.resources || {}).rss_mb, 0, " MB")}</td></tr>`;
      })
      .join("");
    html += `<h4>replicas (Ray) · the tiles above merge them</h4><table class="nbd-mon-replicas">
      <tr><th>replica</th><th>node</th><th>pid</th><th>requests</th><th>p95</th><th>errors</th><th>CPU</th><th>RSS</th></tr>${rows}</table>`;
  }
  const exp = doc.experiment;
  if (exp) {
    const stats = exp.stats || {};
    const value = (metric, v) => ((stats[metric] || {}).value || {})[v];
    const dist = (v) => (exp.distributions || {})[v] || {};
    const rows = Object.entries(exp.counts || {})
      .map(([v, c]) => `<tr data-variant="${esc(v)}"><td>${esc(v)}</td><td>${esc((c.requests ?? 0) + (c.shadowed ?? 0))}</td>
        <td>${esc((c.errors ?? 0) + (c.shadow_errors ?? 0))}</td><td>${fmt(value("latency_ms", v), 1, " ms")}</td>
        <td>${fmt(value("p95_ms", v), 1, " ms")}</td><td>${fmt(value("accuracy", v), 3)}</td>
        <td class="nbd-mon-shares">${esc(shares(dist(v).predictions))}</td><td>${fmt(dist(v).drift_max_psi, 3)}</td>
        <td>${fmt(dist(v).prediction_psi, 3)}</td></tr>`)
      .join("");
    const lifts = Object.entries(stats)
      .filter(([, f]) => f.ready && f.low !== null && f.low !== undefined)
      .map(([m, f]) => `<li>${esc(m)} lift ${fmt(f.lift, 4)} [${fmt(f.low, 4)}, ${fmt(f.high, 4)}]</li>`)
      .join("");
    const agree = exp.agreement && exp.agreement.rows ? `<li>agreement ${fmt(100 * exp.agreement.rate, 1, "%")} of ${esc(exp.agreement.rows)} rows</li>` : "";
    const disagreements = ((exp.agreement || {}).disagreements || []).slice(-5)
      .map((d) => `<li class="nbd-mon-disagree">request ${esc(d.id)} row ${esc(d.row)}: champion ${esc(d.champion)}, challenger ${esc(d.challenger)}</li>`)
      .join("");
    html += `<h4>${esc(exp.kind)} of ${esc(exp.challenger.ref)} · ${esc(exp.percent)}% · since the experiment began</h4>
      <table class="nbd-mon-variants"><tr><th>variant</th><th>requests</th><th>failures</th><th>mean latency</th><th>p95</th><th>accuracy</th>
        <th>predictions</th><th>input PSI</th><th>predictions PSI vs champion</th></tr>${rows}</table>
      <ul>${lifts}${agree}${disagreements}</ul>`;
  }
  // a rule's state comes from its last evaluation (hysteresis); the value shown is its metric on
  // this same snapshot, over the alert window, so it agrees with the tables beside it
  const alerts = doc.alerts || { rules: [], events: [] };
  const firing = new Set(alerts.firing || []);
  // a server of an earlier nbdeploy sends no snapshot_value: its last evaluation's, said so
  const shown = (r) => (r.snapshot_value === undefined ? r.value : r.snapshot_value);
  const rules = (alerts.rules || [])
    .map((r) => [r, shown(r)])
    .map(([r, v]) => `<li class="${firing.has(r.rule) ? "alert-firing" : ""}" data-rule="${esc(r.rule)}" data-value="${esc(v ?? "")}">${esc(r.rule)} — ${firing.has(r.rule) ? "FIRING" : "ok"} · ${v === null || v === undefined ? "no data" : fmt(v, 3)}${r.snapshot_value === undefined ? " (last evaluation)" : ""}</li>`)
    .join("");
  const evaluated = typeof alerts.evaluated_at === "number" ? `states from the evaluation ${ago(alerts.evaluated_at, doc.now)}` : "states from the last evaluation";
  const alertWindow = alerts.window ? ` · values on this snapshot, over ${esc(alerts.window)}${alerts.window !== windowName ? ` (the tables show ${esc(windowName)})` : ""}` : "";
  const events = (alerts.events || [])
    .slice(-5)
    .reverse()
    .map((e) => `<li>${esc(new Date(e.ts * 1000).toLocaleTimeString())} ${esc(e.rule)} ${esc(e.state)}</li>`)
    .join("");
  html += `<h4>alerts${rules ? ` · ${evaluated}${alertWindow}` : ""}</h4><ul class="nbd-mon-alerts">${rules || "<li>no rules</li>"}</ul>${events ? `<ul>${events}</ul>` : ""}`;
  html += job(model.get("job"));
  el.innerHTML = `<div class="nbd-mon">${html}</div>`;
}

function utc(ts, chars = 16) {
  const ok = typeof ts === "number" && ts > 0 && ts < 1e11;
  return ok ? `${new Date(ts * 1000).toISOString().slice(0, chars).replace("T", " ")} UTC` : "–";
}

// the retraining job: what starts it, what follows, the next run, and its last runs with the executed notebook
function job(info) {
  if (!info || !info.state) return "";
  const now = info.running
    ? `run ${esc(info.running.run)} in progress (${esc((info.running.trigger || {}).reason)})`
    : `next run ${esc(utc(info.next_run))}`;
  const queued = info.queued ? ` · queued: ${esc(info.queued.reason)}` : "";
  const rows = (info.runs || []).slice().reverse()
    .map((r) => `<tr data-run="${esc(r.run)}" data-outcome="${esc(r.outcome || "in progress")}"><td>${esc(r.run)}</td>
      <td>${esc(utc(r.started))}</td><td>${esc(r.outcome || "in progress")}</td><td>${esc(r.candidate || "–")}</td>
      <td title="${esc(r.why || "")}">${esc(String(r.why || "").slice(0, 80))}</td>
      <td><code title="${esc(r.notebook || "")}">${esc(r.notebook_artifact || r.notebook || "–")}</code></td></tr>`)
    .join("");
  return `<h4>retraining job · ${esc(info.state)}</h4><div class="nbd-mon-job" data-state="${esc(info.state)}">
    ${esc(info.trigger)}, then ${esc(info.action)} · ${now}${queued}</div>
    ${rows ? `<table class="nbd-mon-runs"><tr><th>run</th><th>started</th><th>outcome</th><th>candidate</th><th>why</th>
      <th>executed notebook</th></tr>${rows}</table>` : "<div>no run yet</div>"}`;
}

export default {
  render({ model, el }) {
    const redraw = () => draw(model, el);
    model.on("change:snapshot", redraw);
    model.on("change:status", redraw);
    model.on("change:window", redraw);
    model.on("change:job", redraw);
    redraw();
  },
};
