// The live globe: every repin of the cluster as an expanding, fading circle where it happened.
// Points arrive by Server-Sent Events from /globe/stream (any worker sends the whole cluster's).
// Map geometry: world-atlas (countries-110m), projected with d3-geo; no CDN, no hand-drawn map.
"use strict";

(function () {
  const GROW_MS = 2000;       // a circle grows for 2 s ...
  const LIFE_MS = 2600;       // ... and is gone after 2.6 s
  const WINDOW_MS = 60000;    // top lists cover the last minute
  const RATE_MS = 5000;       // repins/s over the last 5 s
  const SPIN_DEG_PER_S = 4;
  const TREND_REFRESH_MS = 15000;  // which pins are trending (the dashboard's trending-pins query)

  const canvas = document.getElementById("globe");
  const ctx = canvas.getContext("2d");
  const { TREND_MINUTES, el } = window.pinapp;
  const state = {
    received: 0,        // points received since the page opened
    drawn: 0,           // circles drawn (each point is drawn once it is on the visible side)
    circles: [],        // {lon, lat, born, hot}
    trending: new Set(),  // pin ids trending past the alert threshold: their repins are drawn gold
    hotDrawn: 0,          // circles of trending pins drawn
    recent: [],         // {at, country, category, delay}
    land: null, borders: null,
    rotate: [0, -20], dragging: null, lastFrame: performance.now(),
  };
  window.pinappGlobe = state;  // for the browser tests and the curious

  const projection = d3.geoOrthographic().clipAngle(90).precision(0.5);
  const path = d3.geoPath(projection, ctx);
  const sphere = { type: "Sphere" };
  const graticule = d3.geoGraticule10();

  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * ratio; canvas.height = h * ratio;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    projection.translate([w / 2, h / 2]).scale(Math.min(w, h) / 2 - 8);
  }

  function visible(lon, lat) {
    // A point is on the visible hemisphere when its distance to the view centre is < 90°.
    const [cl, cp] = projection.rotate();
    return d3.geoDistance([lon, lat], [-cl, -cp]) < Math.PI / 2;
  }

  function frame(now) {
    const dt = now - state.lastFrame; state.lastFrame = now;
    if (!state.dragging) state.rotate[0] += SPIN_DEG_PER_S * dt / 1000;
    projection.rotate(state.rotate);
    const w = canvas.clientWidth, h = canvas.clientHeight;
    ctx.clearRect(0, 0, w, h);

    ctx.beginPath(); path(sphere); ctx.fillStyle = "#0b2239"; ctx.fill();
    ctx.beginPath(); path(graticule); ctx.strokeStyle = "rgba(255,255,255,0.06)"; ctx.lineWidth = 0.5; ctx.stroke();
    if (state.land) {
      ctx.beginPath(); path(state.land); ctx.fillStyle = "#2d3b4e"; ctx.fill();
      ctx.beginPath(); path(state.borders); ctx.strokeStyle = "rgba(13,17,23,0.8)"; ctx.lineWidth = 0.5; ctx.stroke();
    }
    ctx.beginPath(); path(sphere); ctx.strokeStyle = "#30363d"; ctx.lineWidth = 1; ctx.stroke();

    const alive = [];
    for (const c of state.circles) {
      const age = now - c.born;
      if (age > LIFE_MS) continue;
      alive.push(c);
      if (!visible(c.lon, c.lat)) continue;
      const [x, y] = projection([c.lon, c.lat]);
      const grow = Math.min(1, age / GROW_MS);
      const alpha = 1 - age / LIFE_MS;
      if (!c.drawn) { c.drawn = true; state.drawn += 1; if (c.hot) state.hotDrawn += 1; }
      const rgb = c.hot ? "255,200,61" : "255,90,95";
      ctx.beginPath(); ctx.arc(x, y, (c.hot ? 3 : 2) + (c.hot ? 28 : 18) * grow, 0, 2 * Math.PI);
      ctx.strokeStyle = `rgba(${rgb},${alpha})`; ctx.lineWidth = c.hot ? 3 : 2; ctx.stroke();
      ctx.beginPath(); ctx.arc(x, y, c.hot ? 3 : 2, 0, 2 * Math.PI);
      ctx.fillStyle = `rgba(${rgb},${alpha})`; ctx.fill();
    }
    state.circles = alive;
    requestAnimationFrame(frame);
  }

  function top(key, since) {
    const counts = new Map();
    for (const r of state.recent) if (r.at >= since) counts.set(r[key], (counts.get(r[key]) || 0) + 1);
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0]))).slice(0, 8);
  }

  function renderList(id, entries) {
    const ol = el(id);
    ol.replaceChildren(...entries.map(([name, n]) => {
      const li = document.createElement("li");
      const label = document.createElement("span"); label.textContent = name;
      const count = document.createElement("span"); count.className = "n"; count.textContent = n;
      li.append(label, count);
      return li;
    }));
  }

  function renderStats() {
    const now = Date.now();
    state.recent = state.recent.filter((r) => r.at >= now - WINDOW_MS);
    const lastFew = state.recent.filter((r) => r.at >= now - RATE_MS).length;
    el("rate").textContent = (lastFew / (RATE_MS / 1000)).toFixed(1);
    el("total").textContent = state.received.toLocaleString("en");
    const delays = state.recent.slice(-200).map((r) => r.delay).sort((a, b) => a - b);
    el("freshness").textContent = delays.length ? `${(delays[delays.length >> 1] / 1000).toFixed(2)} s` : "–";
    renderList("top-countries", top("country", now - WINDOW_MS));
    renderList("top-categories", top("category", now - WINDOW_MS));
  }

  function onPoints(points) {
    const born = performance.now(), at = Date.now();
    for (const p of points) {
      state.received += 1;
      state.circles.push({ lon: p.lon, lat: p.lat, born, drawn: false, hot: state.trending.has(p.pin_id) });
      state.recent.push({ at, country: p.country || "??", category: p.category, delay: at - p.kafka_ts });
    }
  }

  function connect() {
    const status = el("status");
    const source = new EventSource("/globe/stream");
    source.addEventListener("ready", () => { status.textContent = "live"; status.className = "status live"; });
    source.onmessage = (msg) => onPoints(JSON.parse(msg.data));
    source.onerror = () => { status.textContent = "reconnecting…"; status.className = "status error"; };
  }

  async function loadTrending() {
    // Pins scoring past the alert threshold over the trend window; the globe lights their repins.
    try {
      const response = await fetch(`/api/query/trending-pins?minutes=${TREND_MINUTES}&limit=20`);
      if (!response.ok) return;
      const body = await response.json();
      state.trending = new Set(body.rows.filter((r) => Number(r[3]) >= body.alert_score).map((r) => r[0]));
      el("trending").textContent = state.trending.size ? [...state.trending].join(", ") : "none";
    } catch (err) { /* the next refresh tries again */ }
  }

  function drag() {
    canvas.addEventListener("pointerdown", (e) => { state.dragging = [e.clientX, e.clientY, ...state.rotate]; });
    window.addEventListener("pointerup", () => { state.dragging = null; });
    window.addEventListener("pointermove", (e) => {
      if (!state.dragging) return;
      const [x0, y0, r0, r1] = state.dragging;
      state.rotate = [r0 + (e.clientX - x0) / 4, Math.max(-80, Math.min(80, r1 - (e.clientY - y0) / 4))];
    });
  }

  async function loadMap() {
    const response = await fetch("/vendor/countries-110m.json");
    if (!response.ok) throw new Error(`map data: HTTP ${response.status}`);
    const world = await response.json();
    state.land = topojson.feature(world, world.objects.land);
    state.borders = topojson.mesh(world, world.objects.countries, (a, b) => a !== b);
  }

  window.addEventListener("resize", resize);
  resize();
  drag();
  loadMap().catch((err) => { el("status").textContent = String(err); el("status").className = "status error"; });
  connect();
  loadTrending();
  setInterval(loadTrending, TREND_REFRESH_MS);
  setInterval(renderStats, 500);
  requestAnimationFrame(frame);
})();
