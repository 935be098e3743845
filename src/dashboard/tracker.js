// The tracker's page: polls /v1/status and /v1/peers every 2 s. Every value reaches the page as
// DOM text (textContent), never as markup.
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const text = (tag, value, cls) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    e.textContent = value === null || value === undefined ? '–' : String(value);
    return e;
  };
  const ago = (at) => `${Math.max(0, Math.round(Date.now() / 1000 - Number(at) || 0))} s ago`;
  const duration = (s) => (s < 3600 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`);

  async function json(path) {
    const res = await fetch(path, { cache: 'no-store' });
    if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
    return res.json();
  }

  async function tick() {
    try {
      const [status, peers] = await Promise.all([json('/v1/status'), json('/v1/peers')]);
      $('version').textContent = String(status.version);
      $('peer-count').textContent = String(status.peers);
      $('path-count').textContent = String(status.paths);
      $('ttl').textContent = `${status.ttl_secs} s`;
      $('uptime').textContent = duration(Number(status.uptime_secs) || 0);
      $('multiaddrs').replaceChildren(...(status.multiaddrs || []).map((a) => text('li', a)));
      const rows = (peers.peers || []).map((p) => {
        const tr = document.createElement('tr');
        tr.dataset.peerId = String(p.peer_id);
        const addrs = document.createElement('td');
        addrs.className = 'mono';
        for (const a of p.addrs || []) addrs.append(text('div', a));
        tr.append(text('td', p.peer_id, 'mono clip'), addrs, text('td', p.paths, 'num'), text('td', ago(p.last_seen), 'num'));
        return tr;
      });
      if (!rows.length) {
        const tr = document.createElement('tr');
        const td = text('td', 'no live peers', 'empty');
        td.colSpan = 4;
        tr.append(td);
        rows.push(tr);
      }
      document.querySelector('#peers tbody').replaceChildren(...rows);
      $('error').hidden = true;
    } catch (e) {
      $('error').textContent = `tracker unreachable: ${e.message || e}`;
      $('error').hidden = false;
    }
  }
  tick();
  setInterval(tick, 2000);
})();
