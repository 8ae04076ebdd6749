// What every page's script shares (layout.html loads it first): element lookup, table rows,
// JSON from the API, polling with the header's status, the chart theme and the trend window.
"use strict";

window.pinapp = (function () {
  const TREND_MINUTES = 5;  // the trend panels' recent window (the half hour before is its baseline)

  const el = (id) => document.getElementById(id);

  function cell(tr, value, cls) {
    const td = document.createElement("td"); td.textContent = value; if (cls) td.className = cls; tr.append(td);
  }

  // A table row of [value, class] pairs (class "" for none).
  function row(cells, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    for (const [value, c] of cells) cell(tr, value, c);
    return tr;
  }

  async function getJson(url) {
    const response = await fetch(url);
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `${url}: HTTP ${response.status}`);
    return body;
  }

  // Run `refresh` now and every `everyMs`; the header's status says when it last worked, or why not.
  // `state` counts refreshes and errors (the browser tests read them). Returns the run function.
  function poll(refresh, everyMs, state) {
    async function run() {
      const status = el("status");
      try {
        await refresh();
        state.refreshes += 1;
        status.textContent = `updated ${new Date().toLocaleTimeString("en-GB")}`;
        status.className = "status";
      } catch (err) {
        state.errors += 1;
        status.textContent = String(err.message || err);
        status.className = "status error";
      }
    }
    run();
    setInterval(run, everyMs);
    return run;
  }

  if (window.Chart) {
    Chart.defaults.color = "#8b949e";
    Chart.defaults.borderColor = "#30363d";
    Chart.defaults.animation = { duration: 300 };
  }

  return { TREND_MINUTES, el, cell, row, getJson, poll };
})();
