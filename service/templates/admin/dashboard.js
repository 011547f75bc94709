// storypush operations dashboard: polls the operator API every 2 s and redraws.
// Plain DOM building (never innerHTML with data: story titles come from the CMS).
"use strict";
(() => {
  const POLL_MS = 2000;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const page = document.body.dataset.page;
  const FINAL = new Set(["done", "cancelled", "failed"]);
  const SVG = "http://www.w3.org/2000/svg";

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }
  const svg = (tag, attrs) => {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
    return el;
  };
  const fmt = (n) => Number(n).toLocaleString("en-GB");
  const time = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString("en-GB") : "–");
  const iso = (text) => (text ? new Date(text).toLocaleTimeString("en-GB") : "–");
  const byId = (id) => document.getElementById(id);
  const fill = (id, rows) => byId(id).replaceChildren(...rows);

  async function api(path, options = {}) {
    const response = await fetch(path, {
      credentials: "same-origin",
      ...options,
      headers: { Accept: "application/json", "X-CSRF-Token": csrf, ...(options.headers || {}) },
    });
    if (response.status === 401) { window.location.href = "/admin/login?next=" + encodeURIComponent(location.pathname); }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    return body;
  }
  const post = (path) => api(path, { method: "POST" });
  const postJson = (path, body) =>
    api(path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });

  function done(c) { return c.sent + c.failed + c.expired + c.skipped; }
  function percent(c) {
    if (c.state === "done") return 100;
    return c.targeted ? Math.min(100, Math.floor((100 * done(c)) / c.targeted)) : 0;
  }
  function rate(c) {
    if (!c.started_at) return "–";
    const end = c.finished_at || Date.now() / 1000;
    const seconds = Math.max(1, end - c.started_at);
    return fmt(Math.round(done(c) / seconds)) + "/s";
  }
  function progressBar(c, big) {
    const pct = percent(c);
    const bar = h("div", { class: "bar" });
    bar.style.width = pct + "%";
    return h("div", { class: `progress ${c.state}${big ? " big" : ""}`, role: "progressbar",
      "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": pct, "data-state": c.state },
      bar, h("span", { class: "pct" }, pct + "%"));
  }
  const badge = (state) => h("span", { class: `badge state-${state}` }, state);

  function bars(id, entries, cls) {
    const max = Math.max(1, ...entries.map(([, n]) => n));
    fill(id, entries.map(([label, n]) => {
      const bar = h("div", { class: `fill ${cls ? label : ""}` });
      bar.style.width = (100 * n) / max + "%";
      return h("div", { class: "row", "data-key": label }, h("span", {}, label),
        h("div", { class: "track" }, bar), h("span", { class: "n" }, fmt(n)));
    }));
  }

  // One bar per minute (the counters are per-minute buckets); axis labels are HTML so they
  // keep their size when the SVG stretches to the card's width.
  function rateChart(points) {
    const width = 600, height = 150;
    const max = Math.max(1, ...points.map((p) => p.rate));
    const step = width / Math.max(1, points.length);
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    root.append(svg("line", { x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5, class: "axis" }));
    root.append(svg("line", { x1: 0, y1: 0.5, x2: width, y2: 0.5, class: "axis" }));
    points.forEach((p, i) => {
      const barHeight = (height - 2) * (p.rate / max);
      const rect = svg("rect", { x: (i * step + 0.5).toFixed(1), y: (height - barHeight).toFixed(1),
        width: Math.max(1, step - 1).toFixed(1), height: barHeight.toFixed(1), class: "bar" });
      const tip = svg("title", {});
      tip.textContent = `${new Date(p.minute * 1000).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}: ${p.rate} pushes/s`;
      rect.append(tip);
      root.append(rect);
    });
    const label = (cls, text) => h("span", { class: cls }, text);
    byId("rate-chart").replaceChildren(
      h("div", { class: "plot" }, label("ymax", (max >= 10 ? Math.round(max) : max.toFixed(1)) + "/s"), root),
      h("div", { class: "xaxis" }, label("", `−${points.length} min`), label("", "now")));
  }

  function campaignRow(c) {
    return h("tr", { "data-campaign": c.id },
      h("td", {}, h("a", { href: `/admin/campaigns/${encodeURIComponent(c.id)}`, title: c.story.title }, c.story.title)),
      h("td", {}, badge(c.state)),
      h("td", {}, progressBar(c)),
      h("td", { class: "num" }, fmt(c.sent)), h("td", { class: "num" }, fmt(c.failed)),
      h("td", { class: "num opt" }, fmt(c.expired)), h("td", { class: "num" }, fmt(c.targeted)),
      h("td", { class: "num opt" }, rate(c)), h("td", { class: "num opt" }, fmt(c.delivered)),
      h("td", { class: "num opt" }, fmt(c.clicked)), h("td", { class: "small muted opt" }, time(c.created_at)));
  }

  function failedJobRow(job) {
    const act = (verb) => async (event) => {
      event.target.disabled = true;
      try { await post(`/admin/api/failed-jobs/${encodeURIComponent(job.id)}/${verb}`); } catch (e) { alert(e.message); }
      refresh();
    };
    return h("tr", { "data-job": job.id },
      h("td", {}, h("div", {}, job.description || job.id), h("code", {}, job.id)),
      h("td", { class: "err" }, job.error || "–"),
      h("td", { class: "small" }, iso(job.failed_at)),
      h("td", { class: "num" }, h("button", { class: "small", onclick: act("retry") }, "Retry"), " ",
        h("button", { class: "small danger", onclick: act("delete") }, "Delete")));
  }

  function feedHealth(f) {
    if (f.failures) return h("span", { class: "badge state-failed", title: f.last_error || "" }, `failing ×${f.failures}`);
    return f.last_success_at ? badge("ok") : badge("waiting");
  }

  function feedRow(f) {
    const remove = async (event) => {
      if (!confirm(`Stop polling ${f.url}?`)) return;
      event.target.disabled = true;
      try { await api(`/admin/api/feeds/${encodeURIComponent(f.id)}`, { method: "DELETE" }); }
      catch (error) { alert(error.message); }
      refresh();
    };
    const mapped = Object.entries(f.category_map).map(([name, topic]) => `${name}→${topic}`);
    return h("tr", { "data-feed": f.id },
      h("td", { class: "feed-url" }, h("div", {}, f.title || f.url), h("code", {}, f.url),
        f.failures && f.last_error ? h("div", { class: "error small" }, f.last_error) : null),
      h("td", {}, feedHealth(f)),
      h("td", { class: "num" }, `${fmt(f.every)} s`),
      h("td", { class: "small opt" }, time(f.last_polled_at)),
      h("td", { class: "small opt" }, time(f.last_success_at)),
      h("td", { class: "num opt" }, fmt(f.entries_seen)),
      h("td", { class: "num" }, fmt(f.stories)),
      h("td", { class: "small opt" }, [...f.topics, ...mapped].join(", ") || "by category name"),
      h("td", { class: "num" }, h("button", { class: "small danger", onclick: remove }, "Remove")));
  }

  async function addFeed(event) {
    event.preventDefault();
    const form = event.target;
    const field = (name) => form.elements[name].value.trim();
    const body = { url: field("url"), every: Number(field("every")) };
    const topics = field("topics").split(",").map((t) => t.trim()).filter(Boolean);
    if (topics.length) body.topics = topics;
    if (field("category_map")) body.category_map = field("category_map");
    byId("feed-form-error").textContent = "";
    try {
      await postJson("/admin/api/feeds", body);
      form.reset();
    } catch (error) {
      byId("feed-form-error").textContent = error.message;
    }
    refresh();
  }

  async function refreshDashboard() {
    const [overview, list, failed, chart, feedList] = await Promise.all([
      api("/admin/api/overview"), api("/admin/api/campaigns?limit=50"),
      api("/admin/api/failed-jobs"), api("/admin/api/send-rate?minutes=60"), api("/admin/api/feeds"),
    ]);
    fill("feeds", feedList.feeds.length ? feedList.feeds.map(feedRow)
      : [h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No feeds: stories arrive by webhook only."))]);
    byId("stat-subscribers").textContent = fmt(overview.subscribers.total);
    byId("stat-rate").textContent = overview.send_rate.toFixed(1);
    byId("stat-workers").textContent = fmt(overview.workers.length);
    byId("stat-failed").textContent = fmt(failed.jobs.length);
    fill("campaigns", list.campaigns.length ? list.campaigns.map(campaignRow)
      : [h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No campaigns yet."))]);
    fill("queues", overview.queues.map((q) => h("tr", { "data-queue": q.name }, h("td", {}, q.name),
      ...["queued", "started", "scheduled", "deferred", "failed"].map((k) => h("td", { class: "num" }, fmt(q[k]))))));
    fill("workers", overview.workers.length ? overview.workers.map((w) => h("tr", {}, h("td", {}, w.name),
      h("td", {}, badge(w.state)), h("td", {}, w.current_job ? h("code", {}, w.current_job) : "–"),
      h("td", { class: "small" }, iso(w.last_heartbeat))))
      : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No workers running."))]);
    fill("push-services", overview.push_services.length ? overview.push_services.map((o) =>
      h("tr", { "data-origin": o.origin }, h("td", {}, h("code", {}, o.origin)), h("td", {}, badge(o.state)),
        ...["limit", "in_flight", "queued", "throttled", "device_throttled", "unreachable", "circuit_opened"].map((k) =>
          h("td", { class: "num" }, fmt(o[k])))))
      : [h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No pushes sent yet."))]);
    fill("failed-jobs", failed.jobs.length ? failed.jobs.map(failedJobRow)
      : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No failed jobs."))]);
    bars("topics", Object.entries(overview.subscribers.by_topic));
    const f = overview.prompt_funnel;
    bars("funnel", ["shown", "accepted", "subscribed", "declined", "denied"].map((k) => [k, f[k] || 0]), true);
    rateChart(chart.points);
  }

  async function refreshCampaign() {
    const id = document.body.dataset.campaign;
    const c = await api(`/admin/api/campaigns/${encodeURIComponent(id)}`);
    byId("state").replaceWith(Object.assign(badge(c.state), { id: "state" }));
    byId("cancel").disabled = FINAL.has(c.state);
    byId("progress").replaceWith(Object.assign(progressBar(c, true), { id: "progress" }));
    const names = ["targeted", "sent", "failed", "expired", "skipped", "retrying", "delivered", "clicked", "dismissed"];
    fill("counters", [...names.map((k) => h("div", { "data-counter": k }, h("dt", {}, k), h("dd", {}, fmt(c[k])))),
      h("div", {}, h("dt", {}, "rate"), h("dd", {}, rate(c)))]);
    const errors = Object.entries(c.errors).sort((a, b) => b[1] - a[1]);
    fill("errors", errors.length ? errors.map(([reason, n]) => h("tr", {}, h("td", {}, h("code", {}, reason)),
      h("td", { class: "num" }, fmt(n)))) : [h("tr", {}, h("td", { colspan: 2, class: "muted" }, "None so far."))]);
    const steps = [["created", c.created_at], ["scheduled for", c.send_at], ["started", c.started_at],
      [c.state === "cancelled" ? "cancelled" : "finished", c.finished_at]].filter(([label, t]) => label !== "scheduled for" || t);
    fill("timeline", steps.map(([label, t]) => h("li", { class: t ? "" : "pending" }, h("strong", {}, label), " ", time(t))));
  }

  async function refresh() {
    try {
      await (page === "campaign" ? refreshCampaign() : refreshDashboard());
      byId("updated").textContent = "Updated " + new Date().toLocaleTimeString("en-GB");
    } catch (error) {
      byId("updated").textContent = "Update failed: " + error.message;
    }
  }

  if (page === "campaign") {
    byId("cancel").addEventListener("click", async (event) => {
      if (!confirm("Cancel this campaign? Batches not yet sent will be skipped.")) return;
      event.target.disabled = true;
      try { await post(`/admin/api/campaigns/${encodeURIComponent(document.body.dataset.campaign)}/cancel`); }
      catch (error) { alert(error.message); }
      refresh();
    });
  }
  if (page === "dashboard") byId("feed-form").addEventListener("submit", addFeed);
  if (page === "dashboard" || page === "campaign") {
    refresh();
    setInterval(refresh, POLL_MS);
  }
})();
