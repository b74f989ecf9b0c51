// Shade tokens by activation and show a token's exact value on hover; copy a unit's share
// link; draw Plotly charts.
(function () {
  // Orange for positive, blue for negative, alpha |v| / scale (the unit's max activation).
  function shadeTokens(root) {
    root.querySelectorAll(".tokens[data-scale]").forEach((box) => {
      const scale = parseFloat(box.dataset.scale);
      if (!(scale > 0)) return;
      box.querySelectorAll(".tok[data-v]").forEach((tok) => {
        const v = parseFloat(tok.dataset.v);
        if (!v) return;
        const alpha = Math.min(Math.abs(v) / scale, 1).toFixed(3);
        tok.style.background = (v > 0 ? "rgba(255,140,0," : "rgba(60,120,255,") + alpha + ")";
      });
    });
  }

  const tip = document.getElementById("tip");
  document.addEventListener("mouseover", (ev) => {
    const tok = ev.target.closest && ev.target.closest(".tok[data-v]");
    if (!tok) { tip.hidden = true; return; }
    tip.textContent = JSON.stringify(tok.textContent) + "  " + tok.dataset.v;
    const r = tok.getBoundingClientRect();
    tip.style.left = r.left + "px";
    tip.style.top = (r.bottom + 4) + "px";
    tip.hidden = false;
  });

  // The prompt page: a token's button shows its top units.
  document.addEventListener("click", (ev) => {
    const tok = ev.target.closest && ev.target.closest(".prompt-tok");
    if (!tok) return;
    document.querySelectorAll(".token-units").forEach((el) => { el.hidden = true; });
    document.querySelectorAll(".prompt-tok.selected").forEach((el) => el.classList.remove("selected"));
    const panel = document.getElementById("token-" + tok.dataset.pos);
    if (panel) { panel.hidden = false; tok.classList.add("selected"); }
  });

  document.addEventListener("click", async (ev) => {
    const btn = ev.target.closest && ev.target.closest("#copy-link");
    if (!btn) return;
    const url = location.origin + btn.dataset.path;
    try { await navigator.clipboard.writeText(url); btn.textContent = "Copied"; }
    catch (e) { window.prompt("Share this link:", url); }
  });

  function drawPlots(root) {
    if (!window.Plotly) return;
    root.querySelectorAll(".plot[data-plot]").forEach((el) => {
      const h = JSON.parse(el.dataset.plot);
      const kind = el.dataset.kind;
      const trace = kind === "heatmap"
        ? { type: "heatmap", z: h.z, colorscale: "RdBu", reversescale: true, zmid: 0 }
        : kind === "errorbars"
        ? { type: "scatter", mode: "lines+markers", x: h.x, y: h.y, error_y: { type: "data", array: h.sd, visible: true }, marker: { color: "#b45309" } }
        : kind === "scatter"
        ? { type: "scatter", mode: "markers", x: h.x, y: h.y, text: h.text, marker: { color: "#b45309" } }
        : { type: "bar", x: h.x, y: h.y, marker: { color: "#b45309" } };
      Plotly.newPlot(el, [trace], {
        title: { text: el.dataset.title || "" }, margin: { t: 40, r: 10, b: 40, l: 50 },
        xaxis: { title: { text: h.x_title } }, yaxis: { title: { text: h.y_title || "units" } }, bargap: 0.05,
      }, { displayModeBar: false, responsive: true });
    });
  }
  // A unit page opened from the prompt page carries ?prompt=: fill the live box and run it.
  // (The page itself is the same for every prompt, so the server can cache it.)
  function runCarriedPrompt() {
    const query = new URLSearchParams(location.search);
    const text = query.get("prompt") || query.get("defaulttesttext");  // the latter: embeds
    const box = document.getElementById("prompt-text");
    if (!text || !box || !window.htmx) return;
    box.value = text;
    htmx.trigger("#prompt-form", "carried");
  }
  // The unit page's label form posts JSON; on success the page reloads with the label.
  // A server with a write key answers 401 (or 403 to a wrong key): the key field shows,
  // and the key given is kept in this browser for the next label.
  const KEY = "spyglass-write-key";
  document.addEventListener("submit", async (ev) => {
    const form = ev.target.closest && ev.target.closest("#label-form");
    if (!form) return;
    ev.preventDefault();
    const error = document.getElementById("label-error");
    const keyBox = document.getElementById("write-key");
    error.textContent = "";
    const {text, author, key} = Object.fromEntries(new FormData(form).entries());
    const token = key || localStorage.getItem(KEY) || "";
    const headers = {"Content-Type": "application/json"};
    if (token) headers.Authorization = "Bearer " + token;
    try {
      const r = await fetch(form.dataset.url, {
        method: "POST", headers, body: JSON.stringify({text, author}),
      });
      if (r.status === 201) {
        if (key) localStorage.setItem(KEY, key);
        location.reload();
        return;
      }
      if (r.status === 401 || (r.status === 403 && token)) {
        if (!key) localStorage.removeItem(KEY);
        keyBox.hidden = false;
        form.elements.key.required = true;
        form.elements.key.focus();
      }
      error.textContent = (await r.json()).detail || ("error " + r.status);
    } catch (e) { error.textContent = "could not reach the server"; }
  });
  document.addEventListener("DOMContentLoaded", () => {
    shadeTokens(document); drawPlots(document); runCarriedPrompt();
  });
  document.addEventListener("htmx:afterSwap", (ev) => { shadeTokens(ev.target); drawPlots(ev.target); });
})();
