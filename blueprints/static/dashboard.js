// Relay's operator dashboard (docs/operations.md "Dashboard"). Plain JavaScript, no build step.
// Data comes from /admin/dashboard.json; the admin token, when one is needed, is kept in this
// tab's sessionStorage and sent as a header, never in the address. Text from the server (key and
// model names) is only ever set as textContent.
"use strict";

(function () {
  const TOKEN = "relay-admin-token";
  const PERIODS = ["24h", "7d", "30d"];
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
                  "#ca8a04", "#db2777", "#64748b"];
  const state = { period: "24h", metric: "requests", data: null, charts: {} };
  const count = new Intl.NumberFormat("en");
  const compact = new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 });
  // Read by the browser test: the drawn charts, their series and the data; render() redraws.
  window.relayDashboard = state;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function setState(name, message) {
    document.body.dataset.state = name;
    $("status").textContent = message;
  }

  function token() {
    try { return sessionStorage.getItem(TOKEN) || ""; } catch (e) { return ""; }
  }

  async function load() {
    setState("loading", "Loading…");
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    let response;
    try {
      response = await fetch(document.body.dataset.source + "?period=" + encodeURIComponent(state.period),
                             { headers: headers, cache: "no-store", credentials: "omit" });
    } catch (e) {
      setState("error", "Relay could not be reached: " + e.message);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      $("content").hidden = true;
      $("token-form").hidden = false;
      $("forget").hidden = !token();
      setState("token", token() ? "That token was refused. Enter the admin token."
                                : "This address is not allowed: enter the admin token.");
      $("token").focus();
      return;
    }
    let body;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok || body === null) {
      const why = body && body.error && body.error.message ? body.error.message : response.statusText;
      setState("error", "The dashboard's data failed (" + response.status + "): " + why);
      return;
    }
    $("token-form").hidden = true;
    $("forget").hidden = !token();
    state.data = body;
    render();
  }

  function render() {
    const d = state.data;
    $("content").hidden = false;
    const off = d.usage !== "on";
    $("usage-off").hidden = !off;
    $("usage").hidden = off;
    backends(d.backends || []);
    budgets(d.budgets || []);
    if (off) {
      destroyCharts();
      setState("usage-off", "Usage is off. Backends as of " + when(d.generated_at) + ".");
      return;
    }
    totals(d.totals);
    charts();
    top("top-key", "key", d.top.key);
    top("top-model", "model", d.top.model);
    latency(d.latency);
    const from = d.bucket === "hour" ? "per hour" : "per day";
    setState("ready", "Last " + d.period + " (" + from + ", UTC), as of " + when(d.generated_at) + ".");
  }

  function when(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "") + " UTC" : "now";
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : (rate * 100).toFixed(1) + " %";
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(2) + " s" : Math.round(value) + " ms";
  }

  function totals(t) {
    const box = $("totals");
    box.replaceChildren();
    const cards = [
      ["Requests", count.format(t.requests), count.format(t.streamed) + " streamed"],
      ["Tokens", compact.format(t.total_tokens),
       compact.format(t.prompt_tokens) + " in · " + compact.format(t.completion_tokens) + " out"],
      ["Errors", count.format(t.errors), percent(t.error_rate) + " of requests"],
      ["Cache hits", percent(t.cache_hit_rate), count.format(t.cache_hits) + " answered from the cache"],
      ["Mean duration", ms(t.mean_duration_ms), count.format(t.abandoned) + " streams abandoned"],
    ];
    for (const [name, value, note] of cards) {
      const card = el("div", null, "card");
      card.append(el("div", name, "card-name"), el("div", value, "card-value"), el("div", note, "muted"));
      box.append(card);
    }
  }

  function destroyCharts() {
    for (const chart of Object.values(state.charts)) chart.destroy();
    state.charts = {};
  }

  function chartWidth(box) {
    return Math.max(240, Math.floor(box.getBoundingClientRect().width));
  }

  function charts() {
    destroyCharts();
    const d = state.data;
    const xs = d.buckets.map((iso) => Date.parse(iso) / 1000);
    for (const dimension of ["key", "model"]) {
      const s = d.series[dimension];
      const box = $("chart-" + dimension);
      box.replaceChildren();
      const names = s.names.map((n) => n === null ? (dimension === "key" ? "(no key)" : "(no model)") : n);
      const rows = s[state.metric].slice(0, names.length);
      if (s.other) { names.push("other"); rows.push(s[state.metric][names.length - 1]); }
      if (names.length === 0) { box.append(el("p", "No requests in this period.", "muted empty")); continue; }
      const series = [{}].concat(names.map((name, i) => ({
        label: name,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        points: { show: xs.length <= 48, size: 5 },
        value: (u, v) => v === null ? "–" : count.format(v),
      })));
      const options = {
        width: chartWidth(box),
        height: 240,
        series: series,
        scales: { x: { time: true } },
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        axes: [{}, { size: 56, values: (u, ticks) => ticks.map((v) => compact.format(v)) }],
        legend: { live: false },
        cursor: { drag: { x: false, y: false } },
      };
      state.charts[dimension] = new uPlot(options, [xs].concat(rows), box);
    }
  }

  function table(id, head, rows) {
    const t = $(id);
    t.replaceChildren();
    const tr = el("tr");
    for (const h of head) tr.append(el("th", h));
    t.append(tr);
    for (const row of rows) {
      const line = el("tr");
      row.forEach((cell, i) => line.append(el("td", cell, i > 0 ? "num" : "name")));
      t.append(line);
    }
  }

  function top(id, dimension, rows) {
    const none = dimension === "key" ? "(no key)" : "(no model)";
    table(id, [dimension, "requests", "tokens", "errors", "cache hits", "mean"],
      rows.map((r) => [r.name === null ? none : r.name, count.format(r.requests),
                       compact.format(r.total_tokens), count.format(r.errors),
                       percent(r.cache_hit_rate), ms(r.mean_duration_ms)]));
    if (rows.length === 0) table(id, ["No requests in this period."], []);
  }

  function latency(l) {
    $("latency-note").textContent = "Percentiles of successful requests: the newest " +
      count.format(l.sample) + " of the period (at most " + count.format(l.sample_limit) +
      "). TTFT, the time to the first token: streams only.";
    const row = (name, x) => [name, count.format(x.count),
      ms(x.duration_ms.p50), ms(x.duration_ms.p90), ms(x.duration_ms.p99),
      ms(x.first_token_ms.p50), ms(x.first_token_ms.p90), ms(x.first_token_ms.p99)];
    table("latency", ["model", "sample", "p50", "p90", "p99", "TTFT p50", "TTFT p90", "TTFT p99"],
      [row("all", l)].concat(l.by_model.map((m) => row(m.model === null ? "(no model)" : m.model, m))));
  }

  function backends(list) {
    table("backends", ["backend", "type", "state", "in flight", "models"],
      list.map((b) => [b.name, b.type, b.status + (b.error ? ": " + b.error : ""),
                       b.max_in_flight ? b.in_flight + " / " + b.max_in_flight : "–",
                       b.models.length ? b.models.join(", ") : "–"]));
    const rows = $("backends").querySelectorAll("tr");
    list.forEach((b, i) => rows[i + 1].children[2].classList.add(b.status === "ok" ? "ok" : "bad"));
  }

  function budgets(list) {
    $("budgets-none").hidden = list.length > 0;
    $("budgets").hidden = list.length === 0;
    table("budgets", ["key", "budget", "spent", "limit", "resets"],
      list.map((b) => [b.key || b.group || "–", String(b.budget || "").replace(/_/g, " "),
                       count.format(b.spent), count.format(b.limit), when(b.resets_at)]));
    const rows = $("budgets").querySelectorAll("tr");
    list.forEach((b, i) => {
      const bar = el("span", null, "bar");
      const fill = el("span");
      fill.style.width = Math.min(100, b.limit ? (100 * b.spent) / b.limit : 100) + "%";
      if (b.spent >= b.limit) bar.classList.add("full");
      bar.append(fill);
      rows[i + 1].children[2].append(bar);
    });
  }

  function select(navId, attribute, value) {
    for (const button of $(navId).querySelectorAll("button")) {
      button.setAttribute("aria-pressed", String(button.dataset[attribute] === value));
    }
  }

  state.render = render;

  function start() {
    const asked = new URLSearchParams(location.search).get("period");
    if (PERIODS.includes(asked)) state.period = asked;
    select("periods", "period", state.period);
    select("metrics", "metric", state.metric);
    $("periods").addEventListener("click", (event) => {
      const period = event.target.dataset && event.target.dataset.period;
      if (!period) return;
      state.period = period;
      select("periods", "period", period);
      history.replaceState(null, "", "?period=" + period);
      load();
    });
    $("metrics").addEventListener("click", (event) => {
      const metric = event.target.dataset && event.target.dataset.metric;
      if (!metric || !state.data || state.data.usage !== "on") return;
      state.metric = metric;
      select("metrics", "metric", metric);
      charts();
    });
    $("refresh").addEventListener("click", load);
    $("forget").addEventListener("click", () => {
      try { sessionStorage.removeItem(TOKEN); } catch (e) { /* storage off: nothing kept */ }
      load();
    });
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      try { sessionStorage.setItem(TOKEN, $("token").value.trim()); } catch (e) { /* kept nowhere */ }
      $("token").value = "";
      load();
    });
    let resizing = null;
    window.addEventListener("resize", () => {
      clearTimeout(resizing);
      resizing = setTimeout(() => {
        for (const [dimension, chart] of Object.entries(state.charts)) {
          chart.setSize({ width: chartWidth($("chart-" + dimension)), height: 240 });
        }
      }, 150);
    });
    setInterval(() => { if (!document.hidden && document.body.dataset.state === "ready") load(); }, 60000);
    load();
  }

  start();
})();
