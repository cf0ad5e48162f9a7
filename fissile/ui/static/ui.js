// The dashboard's only script: refreshes a page's numbers from the control API every 2 s
// (same origin, with the session cookie) and sends the invoke form. No framework, no build.
"use strict";

(() => {
  const POLL_MS = 2000;
  const UI = "/ui";
  const page = document.body.dataset.page;

  // -- formats: as fissile/ui/format.py writes them --------------------------------------------
  const ms = (v) => (v == null ? "-" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : v >= 10 ? `${v.toFixed(0)} ms` : `${v.toFixed(2)} ms`);
  const percent = (v) => (v == null ? "-" : `${(v * 100).toFixed(1)}%`);
  const rate = (v) => (v == null ? "-" : v >= 10 || v === 0 ? v.toFixed(1) : v.toFixed(2));
  const plain = (v) => (v == null || v === "" ? "-" : String(v));
  const clock = (iso) => (typeof iso === "string" && iso ? iso.replace("T", " ").slice(0, 19) : plain(iso));
  const FORMATS = { rate, error_rate: percent, p50_ms: ms, p99_ms: ms };

  function sparkPath(values, width = 120, height = 24) {
    const present = values.filter((v) => v != null);
    const top = Math.max(0, ...present) || 1;
    const step = width / Math.max(values.length - 1, 1);
    const commands = [];
    let run = 0; // points in the current unbroken run: a lone one is drawn as a dot
    [...values, null].forEach((value, index) => {
      if (value == null) {
        if (run === 1) commands.push("h0");
        run = 0;
        return;
      }
      const x = index * step;
      const y = height - 1 - (value / top) * (height - 2);
      commands.push(`${run ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`);
      run += 1;
    });
    return commands.join(" ");
  }

  const pick = (object, path) => path.split(".").reduce((o, key) => (o == null ? o : o[key]), object);

  function fill(root, stats) {
    root.querySelectorAll("[data-field]").forEach((element) => {
      const format = FORMATS[element.dataset.field] || plain;
      element.textContent = format(pick(stats, element.dataset.field));
    });
    root.querySelectorAll("svg[data-series]").forEach((svg) => {
      const values = stats.series ? stats.series[svg.dataset.series] : null;
      if (values) svg.querySelector("path").setAttribute("d", sparkPath(values));
    });
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = plain(text);
    if (className) td.className = className;
    return td;
  }

  function rows(tbody, items, columns, empty) {
    const fresh = items.map((item) => {
      const tr = document.createElement("tr");
      columns.forEach(([get, className]) => {
        const value = get(item);
        tr.append(value instanceof Node ? wrap(value, className) : cell(value, className));
      });
      return tr;
    });
    if (!fresh.length) {
      const tr = document.createElement("tr");
      tr.className = "muted";
      const td = cell(empty);
      td.colSpan = columns.length;
      tr.append(td);
      fresh.push(tr);
    }
    tbody.replaceChildren(...fresh);
  }

  function wrap(node, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.append(node);
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, { credentials: "same-origin", ...options });
    if (response.status === 401) {
      window.location.assign(`${UI}/login`);
      throw new Error("signed out");
    }
    return response;
  }

  function every(task) {
    let running = false;
    const updated = document.getElementById("updated");
    const tick = async () => {
      if (running || document.hidden) return;
      running = true;
      try {
        await task();
        updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
        updated.classList.remove("error");
      } catch (error) {
        updated.textContent = `not updated: ${error.message}`;
        updated.classList.add("error");
      } finally {
        running = false;
      }
    };
    tick();
    window.setInterval(tick, POLL_MS);
  }

  // -- the functions --------------------------------------------------------------------------
  function overview() {
    const since = document.body.dataset.since;
    every(async () => {
      const response = await api(`/v1/stats?since=${since}&series=true`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const { functions } = await response.json();
      const shown = new Set([...document.querySelectorAll("tr[data-function]")].map((tr) => tr.dataset.function));
      if (functions.length !== shown.size || functions.some((f) => !shown.has(f.function))) {
        window.location.reload(); // functions were created or deleted: the rows change
        return;
      }
      for (const stats of functions) {
        const row = document.querySelector(`tr[data-function="${CSS.escape(stats.function)}"]`);
        if (row) fill(row, stats);
      }
    });
  }

  // -- one function ---------------------------------------------------------------------------
  function functionPage() {
    const name = document.body.dataset.function;
    const base = `/v1/functions/${encodeURIComponent(name)}`;
    const since = document.body.dataset.since;
    let requestsAvailable = true;

    every(async () => {
      const response = await api(`${base}/stats?since=${since}`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const stats = await response.json();
      const summary = document.getElementById("summary");
      if (summary) fill(summary, stats);
      const i = stats.instances;
      document.getElementById("instance-counts").textContent =
        `${i.ready} ready, ${i.busy} busy, ${i.starting} starting, ${stats.queued} queued`;
      rows(document.getElementById("processes"), stats.processes, [
        [(p) => (p.node ? `${p.node}/${p.id}` : p.id)], [(p) => p.pid, "num"], [(p) => p.state], [(p) => p.inflight, "num"], [(p) => `${p.age_s} s`, "num"],
      ], "no instance running");
      const last = stats.last_exit_reason ? `; last exit: ${stats.last_exit_reason}` : "";
      document.getElementById("restarts").textContent = `${stats.restarts} restarts${last}`;
      rows(document.getElementById("crashes"), stats.recent_crashes, [
        [(c) => clock(c.time)], [(c) => (c.node ? `${c.node}/${c.instance || "-"}` : c.instance)], [(c) => c.pid, "num"], [(c) => c.reason],
      ], "no crash since the platform started");

      const logs = await api(`${base}/logs?tail=100`);
      if (logs.ok) {
        const pre = document.getElementById("log-lines");
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent = (await logs.text()) || "(no output yet)";
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      }

      if (requestsAvailable) await recentRequests();
    });

    async function recentRequests() {
      const tbody = document.getElementById("request-rows");
      const response = await api(`${base}/requests?limit=20`);
      if (response.status === 404) {
        requestsAvailable = false;
        rows(tbody, [], [[() => ""]], "not available on this platform");
        tbody.firstChild.firstChild.colSpan = 8;
        return;
      }
      if (!response.ok) return;
      const found = await response.json();
      const records = Array.isArray(found) ? found : found.requests || [];
      rows(tbody, records, [
        [(r) => clock(r.time)], [(r) => r.method], [(r) => r.path], [(r) => r.status, "num"],
        [(r) => ms(r.duration_ms), "num"], [(r) => ms(r.queue_ms), "num"], [(r) => r.instance],
        [(r) => (r.cold ? "cold" : ""), ""],
      ], "no request yet");
    }

    document.getElementById("invoke-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = document.getElementById("invoke-send");
      const method = document.getElementById("invoke-method").value;
      const path = document.getElementById("invoke-path").value;
      const body = document.getElementById("invoke-body").value;
      let type = "text/plain; charset=utf-8";
      try {
        if (body.trim()) {
          JSON.parse(body);
          type = "application/json";
        }
      } catch (_) {
        // not JSON: sent as text
      }
      const query = new URLSearchParams({ method, path });
      button.disabled = true;
      try {
        const response = await api(`${base}/invoke?${query}`, {
          method: "POST",
          body,
          headers: { "content-type": type, "x-fissile-csrf": "1" },
        });
        const answer = await response.json();
        const result = document.getElementById("invoke-result");
        result.hidden = false;
        const status = document.getElementById("invoke-status");
        const shown = document.getElementById("invoke-response");
        if (response.ok) {
          status.textContent = String(answer.status);
          document.getElementById("invoke-time").textContent = `in ${ms(answer.duration_ms)}`;
          shown.textContent = answer.body_encoding === "base64" ? `(base64) ${answer.body}` : answer.body;
          result.dataset.status = String(answer.status);
        } else {
          status.textContent = `${response.status} (from the control API)`;
          document.getElementById("invoke-time").textContent = "";
          shown.textContent = answer.error ? answer.error.message : JSON.stringify(answer);
          result.dataset.status = "";
        }
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- invocations ----------------------------------------------------------------------------
  function invocations() {
    const tbody = document.querySelector("#invocation-list tbody");
    if (!tbody) return;
    const filters = new URLSearchParams(window.location.search);
    const query = new URLSearchParams();
    for (const key of ["status", "function", "limit"]) {
      if (filters.get(key)) query.set(key, filters.get(key));
    }
    every(async () => {
      const response = await api(`/v1/invocations?${query}`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const found = await response.json();
      rows(tbody, found, [
        [(i) => link(`${UI}/invocations/${encodeURIComponent(i.id)}`, i.id)],
        [(i) => link(`${UI}/functions/${encodeURIComponent(i.function)}`, i.function)],
        [(i) => i.status], [(i) => `${i.attempts}/${i.max_attempts}`, "num"], [(i) => clock(i.created_at)],
        [(i) => ms(i.duration_ms), "num"], [(i) => i.error],
      ], "no invocation matches");
    });
  }

  if (page === "overview" && document.getElementById("functions")) overview();
  else if (page === "function") functionPage();
  else if (page === "invocations") invocations();
})();
