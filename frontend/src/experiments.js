// The experiments page: for each experiment (experiments.definitions_file), its allocation over
// time (users newly exposed, cumulative, per group), engagement per group and event type, and
// the sample-ratio verdict, from /api/experiments, refreshed every few seconds.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const COLORS = ["#58a6ff", "#ff8a00", "#3fb950", "#a371f7", "#e60023", "#ffc83d"];
  const { el, row, getJson, poll } = window.pinapp;
  const state = { refreshes: 0, errors: 0, experiments: [], charts: {} };
  window.pinappExperiments = state;  // for the browser tests and the curious

  function section(exp) {
    let box = el(`exp-${exp.name}`);
    if (!box) {
      box = document.createElement("section");
      box.className = "panel wide experiment"; box.id = `exp-${exp.name}`;
      box.innerHTML = `<h2></h2><div class="verdict"></div>
        <div class="trend-lists"><div class="chart"><canvas></canvas></div>
        <table class="allocation"><thead><tr><th>group</th><th class="num">intended</th><th class="num">users</th><th class="num">expected</th></tr></thead><tbody></tbody></table>
        <table class="engagement"><thead><tr><th>group</th><th>event</th><th class="num">events</th><th class="num">users</th></tr></thead><tbody></tbody></table></div>`;
      el("experiments").append(box);
    }
    box.querySelector("h2").textContent = `${exp.name} · since ${exp.start}`;
    const verdict = box.querySelector(".verdict");
    verdict.textContent = exp.verdict;
    verdict.className = `verdict ${exp.mismatch ? "mismatch" : (exp.p_value === null ? "muted" : "ok")}`;
    box.querySelector(".allocation tbody").replaceChildren(...Object.keys(exp.shares).map((g) => row([
      [g, ""], [`${(100 * exp.shares[g]).toFixed(0)}%`, "num"],
      [exp.users[g].toLocaleString("en"), "num"], [Math.round(exp.expected[g]).toLocaleString("en"), "num"],
    ])));
    box.querySelector(".engagement tbody").replaceChildren(...exp.engagement.map(([g, type, events, users]) => row([
      [g, ""], [type, ""], [events.toLocaleString("en"), "num"], [users.toLocaleString("en"), "num"],
    ])));
    renderTimeline(exp, box.querySelector("canvas"));
  }

  function renderTimeline(exp, canvas) {
    // new users per minute and group -> cumulative users per group over time
    const minutes = [...new Set(exp.new_users_per_minute.map((r) => r[0]))].sort();
    const groups = Object.keys(exp.shares);
    const totals = Object.fromEntries(groups.map((g) => [g, 0]));
    const series = Object.fromEntries(groups.map((g) => [g, []]));
    const byMinute = new Map();
    for (const [minute, group, users] of exp.new_users_per_minute) byMinute.set(`${minute}|${group}`, users);
    for (const minute of minutes) {
      for (const g of groups) { totals[g] += byMinute.get(`${minute}|${g}`) || 0; series[g].push(totals[g]); }
    }
    let chart = state.charts[exp.name];
    if (!chart) {
      chart = state.charts[exp.name] = new Chart(canvas, {
        type: "line",
        data: { labels: [], datasets: groups.map((g, i) => ({ label: g, data: [], borderColor: COLORS[i % COLORS.length], backgroundColor: COLORS[i % COLORS.length], pointRadius: 0, tension: 0.2 })) },
        options: { maintainAspectRatio: false, plugins: { title: { display: true, text: "users exposed, cumulative" } }, scales: { y: { beginAtZero: true } } },
      });
    }
    chart.data.labels = minutes.map((m) => m.slice(11));
    chart.data.datasets.forEach((ds) => { ds.data = series[ds.label] || []; });
    chart.update();
  }

  async function refresh() {
    const body = await getJson("/api/experiments");
    state.experiments = body.experiments;
    el("none").hidden = body.experiments.length > 0;
    body.experiments.forEach(section);
  }

  poll(refresh, REFRESH_MS, state);
})();
