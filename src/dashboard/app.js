// peerix operator dashboard: polls /api/status and renders it. No dependencies, no build step.
//
// SECURITY: every string that comes from the daemon (peer ids, agents, addresses, store paths,
// error texts…) may be hostile. It only ever reaches the page as DOM text: textContent, text
// nodes, or element properties (title, className from a sanitised token, dataset). Nothing here
// builds HTML from strings, and no JSON value is ever put into an href or src.
(() => {
  'use strict';

  const POLL_MS = 1000;            // status poll interval
  const FETCH_TIMEOUT_MS = 5000;   // a hung daemon counts as unreachable after this long
  const HISTORY = 120;             // throughput samples kept (one per poll)
  const MAX_ROWS = 50;             // rows shown in the lookups and transfers tables
  const ACTION_ERROR_MS = 15000;   // how long a failed button action stays in #error
  const NIX_HASH = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;
  const STORE_PREFIX = '/nix/store/';
  const DASH = '–';

  // ---- small helpers -------------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);
  const str = (v) => (v === null || v === undefined ? '' : String(v));
  const arr = (v) => (Array.isArray(v) ? v : []);
  const obj = (v) => (v && typeof v === 'object' ? v : {});
  const intFmt = new Intl.NumberFormat('en-US');
  const fmtInt = (v) => intFmt.format(Math.round(num(v)));
  const errText = (e) => (e && e.name === 'AbortError' ? 'timed out' : str((e && e.message) || e));
  const cut = (s, n = 500) => (s.length > n ? `${s.slice(0, n)}…` : s);

  /** Bytes in decimal units: "512 B", "12.3 MB". */
  function fmtBytes(v) {
    let n = num(v);
    if (Math.abs(n) < 1000) return `${Math.round(n)} B`;
    for (const unit of ['kB', 'MB', 'GB', 'TB', 'PB']) {
      n /= 1000;
      // 999.96 kB would print as "1000.0 kB": move on to the next unit instead.
      if (Math.abs(n) < 999.95 || unit === 'PB') return `${n.toFixed(1)} ${unit}`;
    }
  }

  /** A duration in seconds, two units at most: "42 s", "3 min 20 s", "2 h 5 min", "4 d", "4 d 2 h". */
  function fmtDuration(v) {
    const s = Math.max(0, Math.round(num(v)));
    const two = (a, ua, b, ub) => (b ? `${a} ${ua} ${b} ${ub}` : `${a} ${ua}`);
    if (s < 60) return `${s} s`;
    if (s < 3600) return two(Math.floor(s / 60), 'min', s % 60, 's');
    if (s < 86400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
    return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
  }

  /** A hostile string reduced to a safe class-name token: "failed: disk full" → "failed". */
  const token = (v) =>
    str(v).toLowerCase().split(':')[0].trim().replace(/[^a-z0-9-]/g, '-').slice(0, 24) || 'unknown';

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function setText(id, text) {
    const e = $(id);
    if (e && e.textContent !== text) e.textContent = text;
  }

  // ---- table patching --------------------------------------------------------------------------
  // Rows are described as data and patched into an existing <tbody>: rows and cells are reused and a
  // cell is only rebuilt when its description changed, so text selections and hover survive polls.
  //
  // row:  { cls, data: {dataset entries}, cells: [cell…] }
  // cell: { text, title, cls, clip, span, badge: {text, cls}, lines: [string | [head, tail]…],
  //         progress: {value, max} }

  const cellSigs = new WeakMap();

  function patchCell(td, spec) {
    const sig = JSON.stringify(spec);
    if (cellSigs.get(td) === sig) return;
    cellSigs.set(td, sig);
    td.className = spec.cls || '';
    td.title = spec.title || '';
    td.colSpan = spec.span || 1;
    const kids = [];
    if (spec.text !== undefined) kids.push(spec.clip ? el('span', 'clip', spec.text) : document.createTextNode(spec.text));
    if (spec.badge) {
      if (kids.length) kids.push(document.createTextNode(' '));
      kids.push(el('span', `badge ${spec.badge.cls || ''}`, spec.badge.text));
    }
    for (const line of spec.lines || []) {
      // A [head, tail] line clips only its head, so e.g. a long source name keeps its "62 %" visible.
      const div = el('div', 'line', Array.isArray(line) ? undefined : line);
      if (Array.isArray(line)) div.append(el('span', 'clip', line[0]), line[1]); // append(string): a text node
      kids.push(div);
    }
    if (spec.progress) {
      const p = el('progress');
      p.max = spec.progress.max || 1;
      if (spec.progress.value !== undefined) p.value = spec.progress.value; // else indeterminate
      kids.push(p);
    }
    td.replaceChildren(...kids);
  }

  function patchRows(tbody, rows) {
    while (tbody.rows.length > rows.length) tbody.deleteRow(-1);
    rows.forEach((row, i) => {
      const tr = tbody.rows[i] || tbody.insertRow();
      const data = row.data || {};
      for (const k of Object.keys(tr.dataset)) if (!(k in data)) delete tr.dataset[k];
      for (const [k, v] of Object.entries(data)) if (tr.dataset[k] !== v) tr.dataset[k] = v;
      tr.className = row.cls || '';
      while (tr.cells.length > row.cells.length) tr.deleteCell(-1);
      row.cells.forEach((spec, j) => patchCell(tr.cells[j] || tr.insertCell(), spec));
    });
  }

  const emptyRow = (text, span) => ({ cls: 'empty', cells: [{ text, span }] });

  // ---- error banner ----------------------------------------------------------------------------
  // Two independent sources: the status poll (cleared by the next good poll) and the last button
  // action (kept for a while, so the immediate refresh after a failed action does not hide it).

  const errors = { poll: '', action: '' };
  let actionErrorTimer = 0;

  function showErrors() {
    const box = $('error');
    const msg = [errors.poll, errors.action].filter(Boolean).join('\n');
    if (box.textContent !== msg) box.textContent = msg;
    box.hidden = !msg;
  }

  function setActionError(msg) {
    errors.action = msg;
    showErrors();
    clearTimeout(actionErrorTimer);
    if (msg) actionErrorTimer = setTimeout(() => setActionError(''), ACTION_ERROR_MS);
  }

  // ---- rendering -------------------------------------------------------------------------------

  function renderHeader(s) {
    // Health first, as /health says it: a degraded daemon never looks normal here.
    const health = obj(s.health);
    const problems = arr(health.problems).map(str);
    setText('health', health.ok === false ? 'degraded' : health.ok === true ? 'ok' : DASH);
    $('health').className = `state ${health.ok === false ? 'state-degraded' : health.ok === true ? 'state-indexing' : ''}`;
    $('health').title = problems.join('; ');
    const p2p = s.p2p ? obj(s.p2p) : null;
    const id = str(s.peer_id || (p2p && obj(p2p.node).peer_id)) || DASH;
    setText('node-id', id);
    $('node-id').title = id;
    setText('version', str(s.version) || DASH);
    setText('mode', p2p ? str(obj(p2p.node).mode) || DASH : 'no p2p');
    // Reachability (AutoNAT), relay reservations and hole punches, when a tracker or relay is used.
    const nat = obj(obj(obj(p2p).node).nat);
    const relays = arr(nat.reservations).length;
    setText('nat', nat.status ? `${str(nat.status)} · ${relays} relay${relays === 1 ? '' : 's'} · ` +
      `${fmtInt(nat.hole_punches)} hole punch${num(nat.hole_punches) === 1 ? '' : 'es'}` : DASH);
    setText('uptime', fmtDuration(s.uptime_secs));
    setText('updated', new Date().toLocaleTimeString());
  }

  function renderIndex(s) {
    const [scan, idx, bs] = [obj(s.scan), obj(s.index), obj(s.blockstore)];
    const bar = $('index-progress');
    const total = num(scan.total_bytes);
    const done = Math.min(num(scan.done_bytes), total);
    // Nothing to scan: show the bar full.
    [bar.max, bar.value] = total > 0 ? [total, done] : [1, 1];
    bar.title = total > 0 ? `${fmtBytes(done)} of ${fmtBytes(total)}` : 'nothing to scan';
    const paused = scan.paused === true;
    const state = paused ? 'paused' : scan.running ? 'indexing' : 'idle';
    setText('index-state', state);
    $('index-state').className = `state state-${state}`;
    $('pause-index').hidden = paused;
    $('resume-index').hidden = !paused;
    setText('index-paths', `${fmtInt(scan.done_paths)} / ${fmtInt(scan.total_paths)} paths`);
    setText('index-rate', `${fmtBytes(scan.bytes_per_sec)}/s`);
    setText('index-eta', typeof scan.eta_secs === 'number' ? fmtDuration(scan.eta_secs) : DASH);
    setText('published-paths', fmtInt(idx.published_paths));
    setText('chunks', fmtInt(idx.chunks));
    setText('unique-chunks', fmtInt(idx.unique_chunks));
    setText('published-bytes', fmtBytes(idx.published_nar_bytes));
    setText('dedup-bytes', fmtBytes(idx.bytes_deduplicated));
    setText('private-failed', `${fmtInt(idx.private_paths)} / ${fmtInt(idx.failed_paths)}`);
    // cap_bytes absent or null: the daemon reports no cap.
    const cap = typeof bs.cap_bytes === 'number' ? ` of ${fmtBytes(bs.cap_bytes)}` : '';
    setText('blockstore', `${fmtBytes(bs.bytes)}${cap}`);
  }

  function renderCounters(s) {
    const r = obj(s.requests);
    const c = obj(obj(s.substitution).counters);
    setText('narinfo-hits', fmtInt(r.narinfo_hits));
    setText('narinfo-misses', fmtInt(r.narinfo_misses));
    setText('nars-served', fmtInt(r.nars_served));
    setText('nar-bytes-served', fmtBytes(r.nar_bytes_served));
    setText('peer-served', `${fmtInt(r.peer_narinfos_served)} narinfos · ${fmtBytes(r.peer_bytes_served)}`);
    setText('peer-hits', fmtInt(c.peer_hits));
    setText('bytes-from-peers', fmtBytes(c.bytes_from_peers));
    setText('bytes-from-fallbacks', fmtBytes(c.bytes_from_fallbacks));
    setText('transfers-count', `${fmtInt(c.transfers_done)} / ${fmtInt(c.transfers_failed)}`);
  }

  const PEER_COLS = 9;

  function renderPeers(s) {
    const tbody = $('peers').tBodies[0];
    if (!s.p2p) {
      setText('peer-count', '0');
      patchRows(tbody, [emptyRow('no p2p node: this daemon runs without IPFS', PEER_COLS)]);
      return;
    }
    // Connected peers first, then a stable order by id so rows do not jump between polls.
    const peers = arr(obj(s.p2p).peers).map(obj).sort((a, b) =>
      (b.connected === true) - (a.connected === true) || str(a.peer_id).localeCompare(str(b.peer_id)));
    setText('peer-count', fmtInt(peers.filter((p) => p.connected === true).length));
    const rows = peers.map((p) => {
      const id = str(p.peer_id);
      const stats = obj(p.stats);
      return {
        data: { peerId: id },
        cls: p.dishonest === true ? 'dishonest' : p.connected === true ? '' : 'gone',
        cells: [
          { text: id, title: id, clip: true, cls: 'mono' },
          { text: str(p.agent), title: str(p.agent), clip: true },
          { text: str(p.addr), title: str(p.addr), clip: true, cls: 'mono' },
          { text: str(p.found) || DASH },
          { text: p.relayed === true ? 'relayed' : 'direct' },
          { text: p.connected === true ? 'yes' : 'no', // and a visible mark on dishonest peers
            badge: p.dishonest === true ? { text: 'dishonest', cls: 'badge-dishonest' } : undefined },
          { text: fmtInt(p.summary_paths), cls: 'num' },
          { text: fmtBytes(stats.bytes_received), cls: 'num' },
          { text: fmtBytes(stats.bytes_sent), cls: 'num' },
        ],
      };
    });
    patchRows(tbody, rows.length ? rows : [emptyRow('no peers connected', PEER_COLS)]);
  }

  function renderLookups(s) {
    const now = Date.now() / 1000;
    const list = arr(obj(s.substitution).lookups).map(obj)
      .sort((a, b) => num(b.at) - num(a.at)).slice(0, MAX_ROWS);
    const rows = list.map((l) => {
      const peer = str(l.peer);
      return {
        cells: [
          { text: str(l.hash), title: str(l.hash), clip: true, cls: 'mono' },
          { badge: { text: str(l.outcome) || DASH, cls: `badge-${token(l.outcome)}` } },
          { text: `${(num(l.micros) / 1000).toFixed(1)} ms`, cls: 'num' },
          peer ? { text: peer, title: peer, clip: true, cls: 'mono' } : { text: DASH },
          { text: fmtInt(l.asked), cls: 'num' },
          { text: `${fmtDuration(now - num(l.at))} ago`, cls: 'num' },
        ],
      };
    });
    patchRows($('lookups').tBodies[0], rows.length ? rows : [emptyRow('no lookups yet', 6)]);
  }

  function renderTransfers(s) {
    const list = arr(obj(s.substitution).transfers).map(obj)
      .sort((a, b) => num(b.started_at) - num(a.started_at)).slice(0, MAX_ROWS);
    const rows = list.map((t) => {
      const total = num(t.bytes_total);
      const done = num(t.bytes_done);
      const outcome = str(t.outcome);
      const sources = arr(t.sources).map(obj);
      // Each source's share of the bytes the sources delivered.
      const sum = sources.reduce((acc, x) => acc + num(x.bytes), 0);
      const lines = sources.map((x) =>
        [str(x.source), `: ${sum > 0 ? Math.round((100 * num(x.bytes)) / sum) : 0} %`]);
      // Unknown size: indeterminate while running, full once over.
      const progress = total > 0 ? { value: Math.min(done, total), max: total }
        : outcome === 'running' ? { max: 1 } : { value: 1, max: 1 };
      return {
        cells: [
          { text: str(t.store_path), title: str(t.store_path), clip: true, cls: 'mono' },
          { text: `${fmtBytes(done)} / ${fmtBytes(total)}`, progress, cls: 'nowrap' },
          { text: num(t.mb_per_s).toFixed(1), cls: 'num' },
          { badge: { text: outcome || DASH, cls: `badge-${token(outcome)}` }, title: outcome },
          { lines: lines.length ? lines : [DASH], title: lines.map((l) => l.join('')).join('\n') },
        ],
      };
    });
    patchRows($('transfers').tBodies[0], rows.length ? rows : [emptyRow('no transfers yet', 5)]);
  }

  // ---- throughput chart ------------------------------------------------------------------------

  const samples = [];      // [{served, fetched}] in bytes/s, oldest first
  let prevTotals = null;   // counters at the previous sample: {t (s), served, fetched}

  function sampleThroughput(s, t) {
    const served = num(obj(s.requests).nar_bytes_served);
    const c = obj(obj(s.substitution).counters);
    const fetched = num(c.bytes_from_peers) + num(c.bytes_from_fallbacks);
    if (prevTotals) {
      const dt = t - prevTotals.t;
      // An out-of-cycle refresh (after a button) comes early: let the next poll cover the gap.
      if (dt < 0.5) return;
      // Counters reset when the daemon restarts: a negative delta is shown as 0.
      const rate = (now, before) => Math.max(0, (now - before) / dt);
      samples.push({ served: rate(served, prevTotals.served), fetched: rate(fetched, prevTotals.fetched) });
      if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
    }
    prevTotals = { t, served, fetched };
    const last = samples[samples.length - 1];
    setText('rate-served', last ? `${fmtBytes(last.served)}/s` : DASH);
    setText('rate-fetched', last ? `${fmtBytes(last.fetched)}/s` : DASH);
  }

  /** The smallest 1, 2 or 5 × 10^n that is ≥ v: a round top for the y axis. */
  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const canvas = $('throughput');
    const ctx = canvas && canvas.getContext ? canvas.getContext('2d') : null;
    if (!ctx) return;
    // Back the canvas with device pixels so lines stay sharp on high-DPI screens; draw in CSS px.
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 160;
    const bw = Math.round(w * dpr), bh = Math.round(h * dpr);
    if (canvas.width !== bw || canvas.height !== bh) [canvas.width, canvas.height] = [bw, bh];
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);

    // Colours come from the stylesheet so the chart follows light/dark mode.
    const css = getComputedStyle(canvas);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const fg = color('--muted', '#888');
    const series = [['served', color('--served', '#2563eb')], ['fetched', color('--fetched', '#d9480f')]];
    const polyline = (style, width, pts) => {
      ctx.strokeStyle = style;
      ctx.lineWidth = width;
      ctx.beginPath();
      pts.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    };
    const label = (text, x, y, align, baseline, style = fg) => {
      Object.assign(ctx, { fillStyle: style, textAlign: align, textBaseline: baseline });
      ctx.fillText(text, x, y);
    };

    const L = 70, R = 8, T = 22, B = 18; // margins: y labels, legend on top, x labels below
    const pw = w - L - R, ph = h - T - B;
    if (pw <= 0 || ph <= 0) return;
    const peak = samples.reduce((m, x) => Math.max(m, x.served, x.fetched), 0);
    const top = niceCeil(Math.max(1000, peak)); // at least 1 kB/s so an idle chart has a scale
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineJoin = 'round';

    // Grid lines with the y-scale labels at 0, ½ and the top of the scale, then the axes.
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(T + ph * (1 - f)) + 0.5;
      polyline(color('--border', '#ddd'), 1, [[L, y], [L + pw, y]]);
      label(`${fmtBytes(top * f)}/s`, L - 6, y, 'right', 'middle');
    }
    polyline(fg, 1, [[L + 0.5, T], [L + 0.5, T + ph + 0.5], [L + pw, T + ph + 0.5]]);
    // x labels: one sample per poll, the newest at the right edge.
    label(`−${fmtDuration((HISTORY * POLL_MS) / 1000)}`, L + 4, T + ph + 4, 'left', 'top');
    label('now', L + pw, T + ph + 4, 'right', 'top');

    const step = pw / (HISTORY - 1);
    for (const [key, col] of series) {
      polyline(col, 1.75, samples.map((x, i) =>
        [L + pw - (samples.length - 1 - i) * step, T + ph * (1 - x[key] / top)]));
    }
    // Legend, top left above the plot.
    let lx = L + 6;
    for (const [key, col] of series) {
      ctx.fillStyle = col;
      ctx.fillRect(lx, 6, 10, 10);
      label(`${key} bytes/s`, lx + 14, 11, 'left', 'middle');
      lx += 30 + ctx.measureText(`${key} bytes/s`).width;
    }
  }

  // ---- polling ---------------------------------------------------------------------------------

  function render(s, t) {
    for (const part of [renderHeader, renderIndex, renderCounters, renderPeers, renderLookups, renderTransfers]) part(s);
    sampleThroughput(s, t);
    drawChart();
  }

  async function refresh() {
    const ctl = new AbortController();
    const timeout = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    let s;
    try {
      const res = await fetch('/api/status', { cache: 'no-store', signal: ctl.signal });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      s = await res.json();
      if (!s || typeof s !== 'object') throw new Error('malformed status');
    } catch (e) {
      errors.poll = `daemon unreachable: ${errText(e)}`;
      showErrors();
      document.body.classList.add('stale');
      return;
    } finally {
      clearTimeout(timeout);
    }
    errors.poll = '';
    try {
      render(s, performance.now() / 1000);
    } catch (e) {
      errors.poll = `cannot show status: ${errText(e)}`;
    }
    showErrors();
    document.body.classList.remove('stale');
  }

  // One poll at a time; a refresh asked for while one is in flight runs right after it.
  let timer = 0, inflight = false, again = false;

  async function tick() {
    clearTimeout(timer);
    if (inflight) return void (again = true);
    inflight = true;
    await refresh().catch(() => {}); // failures are already shown in #error
    inflight = false;
    const soon = again;
    again = false;
    timer = setTimeout(tick, soon ? 0 : POLL_MS);
  }

  // ---- actions ---------------------------------------------------------------------------------

  const postJson = (url) =>
    fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}', cache: 'no-store' });

  async function indexAction(which) {
    const btn = $(`${which}-index`);
    btn.disabled = true;
    try {
      const res = await postJson(`/api/index/${which}`);
      if (res.ok) setActionError('');
      else setActionError(`${which} failed: HTTP ${res.status}: ${cut(await res.text())}`);
    } catch (e) {
      setActionError(`${which} failed: ${errText(e)}`);
    } finally {
      btn.disabled = false;
    }
    tick();
  }

  /** The hash of "/nix/store/<hash>-name" or of a bare hash, or null when it is not valid. */
  function parseHash(input) {
    const s = input.trim();
    const hash = s.startsWith(STORE_PREFIX) ? s.slice(STORE_PREFIX.length).split(/[-/]/)[0] : s;
    return NIX_HASH.test(hash) ? hash : null;
  }

  function showRecheck(kind, text) {
    const out = $('recheck-result');
    out.className = `result ${kind}`;
    out.textContent = text;
  }

  async function recheck() {
    const hash = parseHash($('recheck-path').value);
    if (!hash) {
      return showRecheck('invalid', 'not a store path: expected /nix/store/<hash>-<name> or a bare hash ' +
        '(32 characters of Nix base32: 0-9 and a-z without e, o, u, t)');
    }
    const btn = $('recheck');
    btn.disabled = true;
    showRecheck('pending', `re-checking ${hash}…`);
    try {
      const res = await postJson(`/api/paths/${hash}/recheck`);
      const text = await res.text();
      if (!res.ok) return showRecheck('invalid', `HTTP ${res.status}: ${cut(text)}`);
      let v = null;
      try { v = obj(JSON.parse(text)); } catch { /* not JSON: shown as it is */ }
      if (!v) return showRecheck('info', cut(text));
      const yn = (b) => (b === true ? 'yes' : 'no');
      const parts = [`verdict: ${str(v.verdict) || DASH}`, `shared: ${yn(v.shared)}`, `changed: ${yn(v.changed)}`];
      if (v.reason !== null && v.reason !== undefined) parts.push(`reason: ${str(v.reason)}`);
      showRecheck(v.shared === true ? 'ok' : 'info', parts.join(' · '));
    } catch (e) {
      showRecheck('invalid', `request failed: ${errText(e)}`);
    } finally {
      btn.disabled = false;
    }
    tick();
  }

  // ---- start -----------------------------------------------------------------------------------

  function start() {
    $('pause-index').addEventListener('click', () => indexAction('pause'));
    $('resume-index').addEventListener('click', () => indexAction('resume'));
    $('recheck').addEventListener('click', recheck);
    $('recheck-path').addEventListener('keydown', (e) => e.key === 'Enter' && recheck());
    window.addEventListener('resize', drawChart);
    drawChart();
    tick();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
