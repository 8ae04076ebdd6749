// The engagement dashboard: the named SingleStore queries of `pinapp query`, as charts,
// refreshed every few seconds from /api/query/{name}. Chart.js comes from the npm registry.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const TYPES = ["pin", "repin", "comment", "like", "login"];
  const COLORS = { pin: "#e60023", repin: "#ff8a00", comment: "#3fb950", like: "#58a6ff", login: "#a371f7" };
  const { TREND_MINUTES, el, row, getJson, poll } = window.pinapp;
  const state = { refreshes: 0, errors: 0, rows: {}, alertScore: Infinity, provisionalFrom: null };
  window.pinappDashboard = state;  // for the browser tests and the curious

  // A minute at or after the slowest partition's processed event time may still grow: its segment
  // is dashed, so the partial current minute does not read as a drop.
  const provisional = (ctx) => (state.provisionalIndex !== undefined && ctx.p1DataIndex >= state.provisionalIndex ? [4, 4] : undefined);
  const perMinute = new Chart(el("per-minute"), {
    type: "line",
    data: { labels: [], datasets: TYPES.map((t) => ({ label: t, data: [], borderColor: COLORS[t], backgroundColor: COLORS[t], tension: 0.2, pointRadius: 0, segment: { borderDash: provisional } })) },
    options: { maintainAspectRatio: false, interaction: { mode: "index", intersect: false }, scales: { y: { beginAtZero: true } } },
  });
  const bar = (id, color) => new Chart(el(id), {
    type: "bar",
    data: { labels: [], datasets: [{ label: "events", data: [], backgroundColor: color }] },
    options: { indexAxis: "y", maintainAspectRatio: false, plugins: { legend: { display: false } } },
  });
  const categories = bar("categories", "#e60023");
  const countries = bar("countries", "#58a6ff");

  async function query(name, minutes, limit) {
    const body = await getJson(`/api/query/${name}?minutes=${minutes}&limit=${limit}`);
    state.rows[name] = body.rows;
    if (name === "events-per-minute") state.provisionalFrom = body.complete_until ? String(body.complete_until).slice(0, 16) : null;
    if (body.alert_score !== undefined) state.alertScore = body.alert_score;
    return body.rows;
  }

  function renderTrending(id, rows) {
    // rows: [item, recent, baseline, score], best first; a score past the alert threshold is lit.
    const body = el(id).tBodies[0];
    body.replaceChildren(...rows.map(([item, recent, baseline, score]) => row(
      [[item ?? "??", ""], [recent, "num"], [baseline, "num"], [Number(score).toFixed(1), "num"]],
      Number(score) >= state.alertScore ? "hot" : "",
    )));
  }

  function renderPerMinute(rows) {
    // rows: [minute, event_type, events], newest first
    const minutes = [...new Set(rows.map((r) => r[0]))].sort();
    const index = new Map(minutes.map((m, i) => [m, i]));
    perMinute.data.labels = minutes.map((m) => m.slice(11));
    const from = state.provisionalFrom === null ? -1 : minutes.findIndex((m) => m >= state.provisionalFrom);
    state.provisionalIndex = from < 0 ? (state.provisionalFrom === null ? 0 : undefined) : from;
    perMinute.data.datasets.forEach((ds) => { ds.data = minutes.map(() => 0); });
    for (const [minute, type, events] of rows) {
      const ds = perMinute.data.datasets[TYPES.indexOf(type)];
      if (ds) ds.data[index.get(minute)] = events;
    }
    perMinute.update();
  }

  function renderBar(chart, rows) {
    chart.data.labels = rows.map((r) => r[0]);
    chart.data.datasets[0].data = rows.map((r) => r[1]);
    chart.update();
  }

  function renderMostRepinned(rows) {
    const body = el("most-repinned").tBodies[0];
    body.replaceChildren(...rows.map(([pinId, title, category, repins]) => row(
      [[pinId, ""], [title || "", ""], [category || "", ""], [repins, "num"]],
    )));
  }

  async function refresh() {
    const minutes = Number(el("window").value);
    const [perMin, cats, ctry, most, tPins, tCats, tCtry] = await Promise.all([
      query("events-per-minute", minutes, (minutes + 2) * TYPES.length),  // every minute of the window
      query("top-categories", minutes, 10),
      query("top-countries", minutes, 10),
      query("most-repinned", minutes, 10),
      query("trending-pins", TREND_MINUTES, 8),
      query("trending-categories", TREND_MINUTES, 5),
      query("trending-countries", TREND_MINUTES, 5),
    ]);
    renderPerMinute(perMin); renderBar(categories, cats); renderBar(countries, ctry); renderMostRepinned(most);
    renderTrending("trending-pins", tPins); renderTrending("trending-categories", tCats);
    renderTrending("trending-countries", tCtry);
  }

  const run = poll(refresh, REFRESH_MS, state);
  el("window").addEventListener("change", run);
})();
