// The reports page: reads the analytics API of the host that served it, and nothing else
// (the page's Content-Security-Policy forbids any other origin). Every value coming from
// events (campaign ids, user ids, cities) is written with textContent, never as HTML.
"use strict";

(() => {
  const KEY_STORAGE = "events-platform.analytics-key";
  const MINUTE = 60 * 1000;
  const DAY = 24 * 60 * MINUTE;
  const integer = new Intl.NumberFormat("en-US");
  const percent = new Intl.NumberFormat("en-US", { style: "percent", maximumFractionDigits: 1 });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const $ = (id) => document.getElementById(id);
  const state = { from: null, to: null, timer: null, plot: null, run: 0 };

  // What the page last drew, by report, and the chart: for people debugging the page and
  // for its test.
  const drawn = {};
  window.reportsPage = { drawn, plot: () => state.plot };

  // --- Numbers and dates -----------------------------------------------------------------

  // Money comes as a decimal string ("12345.60"); grouping keeps every digit of it.
  function money(text) {
    const [whole, fraction] = String(text).split(".");
    const grouped = integer.format(BigInt(whole));
    return fraction === undefined ? grouped : `${grouped}.${fraction}`;
  }

  const pad = (n) => String(n).padStart(2, "0");
  // The value of a datetime-local input for an instant, in the browser's time zone.
  function localInput(date) {
    return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}` +
      `T${pad(date.getHours())}:${pad(date.getMinutes())}`;
  }
  // RFC 3339 in UTC without milliseconds, as the API writes instants.
  const rfc3339 = (date) => date.toISOString().replace(/\.\d{3}Z$/, "Z");

  function preset(name) {
    const now = new Date();
    if (name === "today") {
      const start = new Date(now.getFullYear(), now.getMonth(), now.getDate());
      const end = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
      return [start, end];
    }
    const days = name === "30d" ? 30 : 7;
    const to = new Date(Math.ceil(now.getTime() / MINUTE) * MINUTE);
    return [new Date(to.getTime() - days * DAY), to];
  }

  // --- Errors people can read ------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      super(`HTTP ${status}`);
      this.status = status;
      this.body = body;
      this.retryAfter = retryAfter;
    }
  }

  function explain(error) {
    if (!(error instanceof ApiError)) {
      return `Cannot reach the analytics service (${error.message}). Is it running?`;
    }
    const detail = error.body && error.body.error ? error.body.error : {};
    const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    switch (error.status) {
      case 400: {
        const fields = (detail.details || []).map((d) => `${d.field}: ${d.reason}`);
        return `The reports refused the request (400): ${fields.join("; ") || detail.message || "invalid parameter"}.`;
      }
      case 401:
        return "The API key is missing or wrong (401). Enter a key that analytics accepts (ANALYTICS_API_KEY) above.";
      case 429:
        return `Too many requests from this key or address (429).${wait}`;
      case 503:
        return `The database is unavailable (503); the reports answer again once it is back.${wait}`;
      default:
        return `The analytics service failed (${error.status}): ${detail.message || "no details"}.`;
    }
  }

  // --- The API ---------------------------------------------------------------------------

  async function api(path, params) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== "" && value !== undefined && value !== null) url.searchParams.set(name, value);
    }
    const headers = { Accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(url, { headers, cache: "no-store" });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body, response.headers.get("Retry-After"));
    return body;
  }

  // --- Drawing helpers -------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // A table whose `bar` column draws each row's share of the column's largest value.
  // columns: [{title, value(row) -> text, num?, id?, bar?(row) -> number, alt?}]
  function table(rows, columns, key) {
    if (rows.length === 0) return el("p", { class: "empty", text: "No events in this range." });
    const head = el("tr", {}, ...columns.map((c) => el("th", { class: c.num ? "num" : "", text: c.title })));
    const maxima = columns.map((c) => (c.bar ? Math.max(0, ...rows.map((r) => c.bar(r))) : 0));
    const body = rows.map((row) => {
      const cells = columns.map((c, i) => {
        if (c.bar) {
          const share = maxima[i] > 0 ? (c.bar(row) / maxima[i]) * 100 : 0;
          const bar = el("span");
          bar.style.width = `${share.toFixed(2)}%`;
          return el("td", { class: c.alt ? "bar alt" : "bar" }, bar);
        }
        const cls = c.num ? "num" : c.id ? "id" : "";
        return el("td", { class: cls, "data-field": c.field || "", text: c.value(row) });
      });
      return el("tr", { "data-key": key(row) }, ...cells);
    });
    return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
  }

  const number = (field, title) => ({ title, field, num: true, value: (r) => integer.format(r[field]) });
  const currency = (field, title) => ({ title, field, num: true, value: (r) => money(r[field]) });
  const text = (field, title) => ({ title, field, id: true, value: (r) => String(r[field] ?? "unknown") });
  const bar = (field, alt) => ({ title: "", bar: (r) => Number(r[field]), alt });

  function section(id) {
    const node = $(id);
    return {
      node,
      body: node.querySelector(".body"),
      error: node.querySelector(".error"),
    };
  }

  // --- The reports -----------------------------------------------------------------------

  function drawSummary(stats, revenue) {
    const s = $("summary");
    s.querySelector('[data-figure="total"]').textContent = integer.format(stats.total);
    s.querySelector('[data-figure="revenue"]').textContent = money(revenue.total);
    s.querySelector('[data-figure="purchases"]').textContent = integer.format(revenue.purchases);
  }

  function drawRevenue(revenue) {
    section("revenue").body.replaceChildren(table(revenue.bySource, [
      text("source", "Source"), currency("revenue", "Revenue"), number("purchases", "Purchases"),
      bar("revenue"),
    ], (r) => r.source));
  }

  function drawFunnel(funnel) {
    const blocks = funnel.sources.map((f) => el("div", { "data-source": f.source },
      el("h3", { text: f.source }),
      el("p", { class: "conversion", text:
        `Events ${integer.format(f.topEvents)} top → ${integer.format(f.bottomEvents)} bottom ` +
        `(${percent.format(f.eventConversion)}); users ${integer.format(f.topUsers)} → ` +
        `${integer.format(f.convertedUsers)} converted (${percent.format(f.userConversion)})` }),
      table(f.steps, [
        text("funnelStage", "Stage"), text("eventType", "Event type"),
        number("events", "Events"), number("users", "Users"), bar("events"),
      ], (r) => `${r.funnelStage}/${r.eventType}`)));
    section("funnel").body.replaceChildren(...blocks);
  }

  function drawCampaigns(campaigns, source) {
    const body = section("campaigns").body;
    if (campaigns === null) {
      body.replaceChildren(el("p", { class: "empty", text: `Campaigns come with Facebook events only; ${source} has none.` }));
      return;
    }
    body.replaceChildren(table(campaigns.campaigns, [
      text("campaignId", "Campaign"), number("events", "Events"), number("purchases", "Purchases"),
      currency("revenue", "Revenue"), bar("revenue"),
    ], (r) => r.campaignId));
  }

  function drawGeo(geo) {
    const unknown = el("p", { class: "conversion", "data-figure": "unknownCountryEvents",
      text: `Events without a country: ${integer.format(geo.unknownCountryEvents)}` });
    section("geo").body.replaceChildren(table(geo.countries, [
      text("country", "Country"), number("events", "Events"), number("users", "Users"),
      currency("revenue", "Revenue"), bar("events"),
    ], (r) => r.country), unknown);
  }

  function drawUsers(users) {
    section("users").body.replaceChildren(table(users.users, [
      text("source", "Source"), text("userId", "User"), number("events", "Events"),
      currency("revenue", "Revenue"), bar("events"),
    ], (r) => `${r.source}/${r.userId}`));
  }

  function drawDemographics(answers) {
    const lists = {
      ageBuckets: ["bucket", "Age"], genders: ["gender", "Gender"], followerBuckets: ["bucket", "Followers"],
      devices: ["device", "Device"], countries: ["country", "Country"], cities: ["city", "City"],
    };
    const blocks = answers.map((d) => el("div", { "data-source": d.source },
      el("h3", { text: d.source }),
      ...Object.entries(lists).filter(([list]) => Array.isArray(d[list])).map(([list, [field, title]]) =>
        el("div", { "data-list": list }, table(d[list], [
          text(field, title), number("users", "Users"), bar("users", true),
        ], (r) => (list === "cities" ? `${r.city}/${r.country}` : String(r[field])))))));
    section("demographics").body.replaceChildren(...blocks);
  }

  function drawTimeseries(series) {
    const node = $("timeseries").querySelector(".chart");
    const xs = series.points.map((p) => Date.parse(p.bucket) / 1000);
    const counts = series.points.map((p) => p.count);
    const revenue = series.points.map((p) => Number(p.revenue));
    const data = [xs, counts, revenue];
    const width = Math.max(320, node.clientWidth || 800);
    const options = {
      width,
      height: 260,
      scales: { x: { time: true }, rev: {} },
      series: [
        { label: "Time" },
        { label: "Events", stroke: "#3b6fd8", width: 2, value: (u, v) => (v == null ? "–" : integer.format(v)) },
        { label: "Revenue", stroke: "#e08a2c", width: 2, scale: "rev", value: (u, v) => (v == null ? "–" : v.toFixed(2)) },
      ],
      axes: [{}, { label: "events" }, { side: 1, scale: "rev", label: "revenue", grid: { show: false } }],
    };
    if (state.plot) state.plot.destroy();
    node.replaceChildren();
    state.plot = new uPlot(options, data, node);
  }

  // --- One refresh -----------------------------------------------------------------------

  function fail(id, error) {
    const { node, error: message } = section(id);
    node.dataset.state = "error";
    message.textContent = explain(error);
    message.hidden = false;
  }

  async function report(id, load, draw) {
    const { node, error } = section(id);
    node.dataset.state = "loading";
    try {
      const answer = await load();
      drawn[id] = answer;
      draw(answer);
      error.hidden = true;
      node.dataset.state = "ready";
      return null;
    } catch (e) {
      fail(id, e);
      return e;
    }
  }

  async function refresh() {
    const run = ++state.run;
    const source = $("source").value;
    const range = { from: rfc3339(state.from), to: rfc3339(state.to) };
    const filtered = { ...range, source };
    document.body.dataset.state = "loading";
    setStatus("Loading…", false);
    const demographicSources = source ? [source] : ["facebook", "tiktok"];
    const errors = await Promise.all([
      report("summary", async () => {
        const [stats, revenue] = await Promise.all([api("/analytics/stats", filtered), api("/analytics/revenue", filtered)]);
        return { stats, revenue };
      }, ({ stats, revenue }) => drawSummary(stats, revenue)),
      // Hours and days of the reader's own time zone, as the chart's axis shows them.
      report("timeseries",
        () => api("/analytics/timeseries", { ...filtered, interval: $("interval").value, tz: zone }),
        drawTimeseries),
      report("funnel", () => api("/analytics/funnel", filtered), drawFunnel),
      report("revenue", () => api("/analytics/revenue", filtered), drawRevenue),
      report("campaigns",
        () => (source === "tiktok" ? Promise.resolve(null) : api("/analytics/campaigns/top", { ...range, limit: 10 })),
        (answer) => drawCampaigns(answer, source)),
      report("geo", () => api("/analytics/geo", { ...filtered, limit: 20 }), drawGeo),
      report("users", () => api("/analytics/users/top", { ...filtered, limit: 10 }), drawUsers),
      report("demographics",
        () => Promise.all(demographicSources.map((s) => api("/analytics/demographics", { ...range, source: s }))),
        drawDemographics),
    ]);
    if (run !== state.run) return; // a newer refresh has started; it reports instead
    const first = errors.find((e) => e !== null);
    if (first) {
      setStatus(explain(first), true);
      document.body.dataset.state = "error";
    } else {
      setStatus(`Updated ${new Date().toLocaleTimeString()} · ${range.from} to ${range.to} (UTC)`, false);
      document.body.dataset.state = "ready";
    }
  }

  function setStatus(message, isError) {
    const status = $("status");
    status.textContent = message;
    status.className = isError ? "error" : "";
  }

  // --- Controls and the address bar ------------------------------------------------------

  function setRange(from, to) {
    state.from = from;
    state.to = to;
    $("from").value = localInput(from);
    $("to").value = localInput(to);
  }

  // The address keeps the range and filters, so a view can be bookmarked and shared.
  function remember() {
    const query = new URLSearchParams({ from: rfc3339(state.from), to: rfc3339(state.to) });
    if ($("source").value) query.set("source", $("source").value);
    query.set("interval", $("interval").value);
    history.replaceState(null, "", `?${query}`);
  }

  function restore() {
    const query = new URLSearchParams(window.location.search);
    const from = new Date(query.get("from") || "");
    const to = new Date(query.get("to") || "");
    if (!Number.isNaN(from.getTime()) && !Number.isNaN(to.getTime())) setRange(from, to);
    else setRange(...preset("7d"));
    for (const id of ["source", "interval"]) {
      const value = query.get(id);
      if (value !== null && [...$(id).options].some((o) => o.value === value)) $(id).value = value;
    }
  }

  function schedule() {
    clearInterval(state.timer);
    const seconds = Number($("every").value);
    state.timer = seconds > 0 ? setInterval(refresh, seconds * 1000) : null;
  }

  function go() {
    remember();
    refresh();
  }

  function start() {
    $("zone").textContent = zone;
    $("key").value = sessionStorage.getItem(KEY_STORAGE) || "";
    restore();
    $("controls").addEventListener("submit", (event) => {
      event.preventDefault();
      go();
    });
    for (const button of document.querySelectorAll("[data-preset]")) {
      button.addEventListener("click", () => {
        setRange(...preset(button.dataset.preset));
        go();
      });
    }
    for (const id of ["from", "to"]) {
      $(id).addEventListener("change", () => {
        const from = new Date($("from").value);
        const to = new Date($("to").value);
        if (!Number.isNaN(from.getTime()) && !Number.isNaN(to.getTime())) {
          state.from = from;
          state.to = to;
        }
      });
    }
    for (const id of ["source", "interval"]) $(id).addEventListener("change", go);
    $("every").addEventListener("change", schedule);
    $("key").addEventListener("change", () => {
      const key = $("key").value.trim();
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
      go();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      $("key").value = "";
      go();
    });
    window.addEventListener("resize", () => {
      const chart = $("timeseries").querySelector(".chart");
      if (state.plot) state.plot.setSize({ width: Math.max(320, chart.clientWidth), height: 260 });
    });
    go();
  }

  start();
})();
