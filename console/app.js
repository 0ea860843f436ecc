// jobscope console: three pages (cluster, jobs, job) over the documented /v1 API.
// No build step; uPlot (vendored) draws the charts. The API token, when the server wants one,
// is kept in sessionStorage and sent as a bearer header; streams use single-use tickets
// (POST /v1/stream/tickets), so no token ever appears in a URL.
'use strict';
(function () {
  const TOKEN_KEY = 'jobscope.token';
  const STATES = ['running', 'pending', 'completed', 'failed', 'cancelled'];
  const NODE_STATES = ['idle', 'mixed', 'allocated', 'drained', 'down', 'unknown'];
  const PAGE_SIZE = 50;
  const MIB = 1024 * 1024;
  const PALETTE = ['#2f81f7', '#e5534b', '#3fb950', '#d29922', '#a371f7', '#db61a2', '#39c5cf', '#f0883e'];

  const main = document.getElementById('main');
  const live = document.getElementById('live');
  const signinLink = document.getElementById('signin-link');
  let page = { streams: [], timers: [], charts: [], onResize: null };

  // ---- small helpers -------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  const dash = '—';
  function fmtBytes(b) {
    if (b === null || b === undefined || !isFinite(b)) return dash;
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toFixed(0) : b.toFixed(b < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtPct(v) { return v === null || v === undefined ? dash : v.toFixed(1) + ' %'; }
  function fmtTime(t) {
    if (!t) return dash;
    const d = new Date(t);
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return dash;
    s = Math.max(0, Math.round(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (h) return m ? `${h} h ${m} min` : `${h} h`;
    return m ? (sec ? `${m} min ${sec} s` : `${m} min`) : `${sec} s`;
  }
  function runtime(job) {
    if (job.state === 'pending') return null;
    if (job.runtime_seconds !== null && job.runtime_seconds !== undefined) return job.runtime_seconds;
    if (job.state === 'pending' || !job.start_time) return null;
    return (Date.now() - Date.parse(job.start_time)) / 1000;
  }
  function badge(state) { return el('span', { class: 'badge b-' + state, text: state }); }
  function memoryOf(sample) {
    if (typeof sample.memory_usage_bytes === 'number') return sample.memory_usage_bytes;
    if (typeof sample.memory_usage_mb === 'number') return sample.memory_usage_mb * MIB;
    return null;
  }
  function maxMemoryOf(job) {
    if (typeof job.max_memory_usage_bytes === 'number' && job.max_memory_usage_bytes > 0) return job.max_memory_usage_bytes;
    if (typeof job.max_memory_usage_mb === 'number') return job.max_memory_usage_mb * MIB;
    return null;
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  // ---- API -----------------------------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }
  async function api(path, options, withToken) {
    const opts = options || {};
    const headers = { Accept: 'application/json' };
    const t = withToken !== undefined ? withToken : token();
    if (t) headers.Authorization = 'Bearer ' + t;
    let response;
    try {
      response = await fetch(path, { method: opts.method || 'GET', headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'network', 'The server cannot be reached.');
    }
    if (!response.ok) {
      let body = {};
      try { body = await response.json(); } catch (e) { /* not JSON */ }
      throw new ApiError(response.status, body.error || '', body.message || response.statusText);
    }
    return response.json();
  }

  function setLive(on, text) {
    live.classList.toggle('on', on);
    live.textContent = text || (on ? 'live' : 'reconnecting');
  }

  // An EventSource on `path` that reconnects with a fresh ticket and resumes after the last id.
  // A connection without a last id starts at the server's "now", fixed before the response
  // opens: `resync`, called on that open, refetches what the page drew before it, so nothing
  // committed in between is missed.
  function stream(path, handlers, resync) {
    let es = null;
    let closed = false;
    let lastId = null;
    let delay = 1000;
    const retry = () => {
      if (closed) return;
      setLive(false);
      page.timers.push(setTimeout(connect, delay));
      delay = Math.min(delay * 2, 15000);
    };
    async function connect() {
      if (closed) return;
      let ticket;
      try {
        ticket = (await api('/v1/stream/tickets', { method: 'POST' })).ticket;
      } catch (e) {
        if (e.status === 401 || e.status === 403) { authProblem(e); return; }
        retry();
        return;
      }
      if (closed) return;
      const params = new URLSearchParams({ ticket });
      if (lastId) params.set('last_event_id', lastId);
      const fresh = !lastId;
      es = new EventSource(path + (path.includes('?') ? '&' : '?') + params);
      es.addEventListener('open', () => {
        delay = 1000;
        setLive(true);
        if (fresh && resync) resync();
      });
      es.addEventListener('error', () => { es.close(); retry(); });
      for (const [name, fn] of Object.entries(handlers)) {
        es.addEventListener(name, (ev) => {
          if (ev.lastEventId) lastId = ev.lastEventId;
          let envelope;
          try { envelope = JSON.parse(ev.data); } catch (e) { return; }
          fn(envelope.data || {}, envelope);
        });
      }
    }
    connect();
    const handle = { close() { closed = true; if (es) es.close(); } };
    page.streams.push(handle);
    return handle;
  }

  function every(ms, fn) { page.timers.push(setInterval(fn, ms)); }
  // Calls fn at most once per `ms`, the last call winning.
  function debounce(ms, fn) {
    let timer = null;
    return () => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; fn(); }, ms);
      page.timers.push(timer);
    };
  }

  function teardown() {
    for (const s of page.streams) s.close();
    for (const t of page.timers) { clearTimeout(t); clearInterval(t); }
    for (const c of page.charts) c.destroy();
    if (page.onResize) window.removeEventListener('resize', page.onResize);
    page = { streams: [], timers: [], charts: [], onResize: null };
  }

  function render(...nodes) {
    main.replaceChildren(...nodes);
  }

  function authProblem(e) {
    teardown();
    setLive(false, 'signed out');
    signInPage(e.status === 403
      ? 'This token may not read jobs (403). Sign in with a reader or admin token.'
      : 'This server needs a token (401). Paste one to sign in.');
  }

  function failure(e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) { authProblem(e); return; }
    render(el('div', { class: 'banner', role: 'alert' },
      el('p', { class: 'error', text: 'Something went wrong: ' + (e.message || e) }),
      el('p', {}, el('a', { href: location.hash || '#/', text: 'Try again' }))));
    const retry = main.querySelector('a');
    if (retry) retry.addEventListener('click', (ev) => { ev.preventDefault(); route(); });
  }

  // ---- sign in -------------------------------------------------------------------------------
  function signInPage(reason) {
    document.title = 'Sign in · jobscope';
    const input = el('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'signin-help' });
    const error = el('p', { id: 'signin-error', class: 'error', role: 'alert' });
    error.hidden = true;
    const submit = el('button', { type: 'submit', class: 'primary', id: 'signin-submit', text: 'Sign in' });
    const form = el('form', { class: 'signin', id: 'signin-form' },
      el('label', { for: 'token' }, 'API token', input),
      error,
      el('div', { class: 'actions' }, submit,
        token() ? el('button', { type: 'button', id: 'signout', text: 'Sign out', onclick: () => {
          sessionStorage.removeItem(TOKEN_KEY);
          updateSigninLink();
          location.hash = '#/';
          route();
        } }) : null));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      error.hidden = true;
      submit.disabled = true;
      try {
        await api('/v1/jobs?limit=1', {}, t);
        sessionStorage.setItem(TOKEN_KEY, t);
        updateSigninLink();
        if (location.hash === '#/signin' || !location.hash) location.hash = '#/';
        else route();
      } catch (e) {
        error.textContent = e.status === 401
          ? 'The server did not accept this token (401 unauthorized). Check it and try again.'
          : e.status === 403
            ? 'This token is valid but may not read jobs (403 forbidden). Use a reader or admin token.'
            : 'Sign-in failed: ' + e.message;
        error.hidden = false;
        input.focus();
      } finally {
        submit.disabled = false;
      }
    });
    render(el('section', { class: 'panel' },
      el('h1', { text: 'Sign in' }),
      reason ? el('p', { class: 'banner', role: 'status', text: reason }) : null,
      el('p', { id: 'signin-help', class: 'muted', text: 'Paste an API token (reader or admin). It stays in this browser tab only and is sent as an Authorization header, never in a URL.' }),
      form));
    input.focus();
  }

  function updateSigninLink() {
    signinLink.textContent = token() ? 'Signed in' : 'Sign in';
  }

  // ---- cluster page --------------------------------------------------------------------------
  async function clusterPage() {
    document.title = 'Cluster · jobscope';
    const cards = el('div', { class: 'cards', id: 'job-cards' });
    const grid = el('ul', { class: 'nodes', id: 'node-grid', 'aria-label': 'Nodes' });
    const nodeSummary = el('span', { class: 'muted', id: 'node-summary' });
    const partBody = el('tbody', { id: 'partitions' });
    render(
      el('h1', { text: 'Cluster' }),
      el('section', { class: 'panel', 'aria-labelledby': 'jobs-h' }, el('h2', { id: 'jobs-h', text: 'Jobs by state' }), cards),
      el('section', { class: 'panel', 'aria-labelledby': 'nodes-h' },
        el('h2', { id: 'nodes-h' }, 'Nodes ', nodeSummary),
        el('ul', { class: 'legend', 'aria-label': 'Node states' },
          NODE_STATES.map((s) => el('li', { class: 's-' + s }, el('i', {}), s))),
        grid),
      el('section', { class: 'panel', 'aria-labelledby': 'parts-h' },
        el('h2', { id: 'parts-h', text: 'Partitions and queues' }),
        el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {},
            el('th', { scope: 'col', text: 'Partition' }), el('th', { scope: 'col', text: 'State' }),
            el('th', { scope: 'col', class: 'num', text: 'Nodes' }), el('th', { scope: 'col', class: 'num', text: 'CPUs' }),
            el('th', { scope: 'col', class: 'num', text: 'Running' }), el('th', { scope: 'col', class: 'num', text: 'Queued' }),
            el('th', { scope: 'col', class: 'num hide-sm', text: 'Time limit' }))),
          partBody))));

    let counts = null;
    let gpus = null;
    function drawCards() {
      if (!counts) return;
      cards.replaceChildren(...STATES.map((s) =>
        el('a', { class: 'card ' + s, href: '#/jobs?state=' + s, 'data-state': s },
          el('span', { class: 'n', text: counts[s] || 0 }), el('span', { class: 'l', text: s }))),
      el('div', { class: 'card gpus' }, el('span', { class: 'n', text: gpus === null ? dash : gpus }), el('span', { class: 'l', text: 'GPUs in use' })));
    }
    function drawNodes(nodes) {
      const by = {};
      for (const n of nodes) by[n.state] = (by[n.state] || 0) + 1;
      nodeSummary.textContent = `${nodes.length} · ` + NODE_STATES.filter((s) => by[s]).map((s) => `${by[s]} ${s}`).join(', ');
      grid.replaceChildren(...nodes.map((n) => {
        const cpu = typeof n.cpu_usage_percent === 'number' ? n.cpu_usage_percent : null;
        const bar = el('span', {});
        bar.style.width = (cpu || 0).toFixed(0) + '%';
        const detail = [n.state + (n.state_reason ? ` (${n.state_reason})` : ''),
          `CPU ${fmtPct(cpu)}`, `memory ${fmtBytes(n.memory_used_bytes)} of ${fmtBytes(n.memory_total_bytes)}`,
          `${n.running_jobs} running job${n.running_jobs === 1 ? '' : 's'}`,
          n.gpus && n.gpus.length ? `${n.gpus.length} GPUs` : null].filter(Boolean).join(', ');
        return el('li', { class: 'node s-' + n.state, 'data-node': n.name },
          el('a', { href: '#/jobs?node=' + encodeURIComponent(n.name), title: n.name + ': ' + detail, 'aria-label': n.name + ': ' + detail },
            el('span', { class: 'name', text: n.name }),
            el('span', { class: 'pct', 'aria-hidden': 'true', text: n.state === 'down' ? 'down' : cpu === null ? dash : cpu.toFixed(0) + ' %' }),
            el('span', { class: 'bar', 'aria-hidden': 'true' }, bar)));
      }));
    }
    function drawPartitions(parts) {
      partBody.replaceChildren(...parts.map((p) => el('tr', {},
        el('th', { scope: 'row' }, el('a', { href: '#/jobs?partition=' + encodeURIComponent(p.name), text: p.name }), p.is_default ? ' (default)' : ''),
        el('td', { text: p.state }),
        el('td', { class: 'num', text: p.total_nodes ?? dash }),
        el('td', { class: 'num', text: p.total_cpus ?? dash }),
        el('td', { class: 'num' }, el('a', { href: `#/jobs?partition=${encodeURIComponent(p.name)}&state=running`, text: p.jobs_running })),
        el('td', { class: 'num' }, el('a', { href: `#/jobs?partition=${encodeURIComponent(p.name)}&state=pending`, text: p.jobs_pending })),
        el('td', { class: 'num hide-sm', text: p.limits && p.limits.max_time_minutes ? fmtDuration(p.limits.max_time_minutes * 60) : dash }))));
      if (!parts.length) partBody.replaceChildren(el('tr', {}, el('td', { colspan: 7, class: 'muted', text: 'No partitions (they come from the scheduler).' })));
    }
    async function refresh() {
      const [nodes, parts] = await Promise.all([api('/v1/nodes'), api('/v1/partitions')]);
      drawNodes(nodes.nodes || []);
      drawPartitions(parts.partitions || []);
    }
    try {
      const totals = await Promise.all(STATES.map((s) => api(`/v1/jobs?state=${s}&limit=1`)));
      counts = {};
      STATES.forEach((s, i) => { counts[s] = totals[i].total; });
      drawCards();
      await refresh();
    } catch (e) { failure(e); return; }
    const later = debounce(1000, () => refresh().catch(() => {}));
    stream('/v1/stream/cluster?interval_seconds=2&exclude_samples=true', {
      // Counts, nodes and queues are redrawn together, so the pending card and the
      // partitions' queues tell the same story.
      status: (s) => {
        if (s.jobs_by_state) { counts = s.jobs_by_state; gpus = s.running_gpus ?? null; drawCards(); }
        later();
      },
      job_event: later,
    }, later);
  }

  // ---- jobs page -----------------------------------------------------------------------------
  const COLUMNS = [
    { key: 'id', label: 'Job', sort: 'id' },
    { key: 'user', label: 'User', sort: 'user' },
    { key: 'state', label: 'State', sort: 'state' },
    { key: 'partition', label: 'Partition', sort: 'partition' },
    { key: 'nodes', label: 'Nodes', cls: 'hide-sm' },
    { key: 'start', label: 'Start', sort: 'start_time' },
    { key: 'runtime', label: 'Runtime', cls: 'num' },
    { key: 'cpu', label: 'CPU', sort: 'cpu_usage', cls: 'num' },
    { key: 'memory', label: 'Memory', sort: 'memory_usage_mb', cls: 'num hide-sm' },
    { key: 'gpu', label: 'GPU', cls: 'num hide-sm' },
  ];

  async function jobsPage(params) {
    document.title = 'Jobs · jobscope';
    const f = {
      user: params.get('user') || '', state: params.get('state') || '', partition: params.get('partition') || '',
      node: params.get('node') || '', sort: params.get('sort') || 'start_time', order: params.get('order') || 'desc',
      offset: Math.max(0, parseInt(params.get('offset') || '0', 10) || 0),
    };
    const go = (changes) => {
      const next = Object.assign({}, f, changes);
      const q = new URLSearchParams();
      for (const k of ['user', 'state', 'partition', 'node']) if (next[k]) q.set(k, next[k]);
      if (next.sort !== 'start_time') q.set('sort', next.sort);
      if (next.order !== 'desc') q.set('order', next.order);
      if (next.offset) q.set('offset', next.offset);
      const s = q.toString();
      location.hash = '#/jobs' + (s ? '?' + s : '');
    };
    const userIn = el('input', { id: 'f-user', name: 'user', value: f.user, autocomplete: 'off' });
    const nodeIn = el('input', { id: 'f-node', name: 'node', value: f.node, autocomplete: 'off' });
    const stateIn = el('select', { id: 'f-state', name: 'state' }, el('option', { value: '', text: 'any' }),
      STATES.map((s) => el('option', { value: s, text: s, selected: s === f.state })));
    const partIn = el('select', { id: 'f-partition', name: 'partition' }, el('option', { value: '', text: 'any' }),
      f.partition ? el('option', { value: f.partition, text: f.partition, selected: true }) : null);
    const form = el('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
      el('label', { for: 'f-user' }, 'User', userIn),
      el('label', { for: 'f-state' }, 'State', stateIn),
      el('label', { for: 'f-partition' }, 'Partition', partIn),
      el('label', { for: 'f-node' }, 'Node', nodeIn),
      el('button', { type: 'submit', class: 'primary', text: 'Apply' }),
      el('button', { type: 'button', text: 'Clear', onclick: () => { location.hash = '#/jobs'; } }));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      go({ user: userIn.value.trim(), state: stateIn.value, partition: partIn.value, node: nodeIn.value.trim(), offset: 0 });
    });
    stateIn.addEventListener('change', () => form.requestSubmit());
    partIn.addEventListener('change', () => form.requestSubmit());

    const head = el('tr', {}, COLUMNS.map((c) => {
      const th = el('th', { scope: 'col', class: c.cls || null });
      if (c.sort) {
        th.setAttribute('aria-sort', f.sort === c.sort ? (f.order === 'asc' ? 'ascending' : 'descending') : 'none');
        th.append(el('button', { type: 'button', text: c.label, 'data-sort': c.sort, onclick: () => {
          const order = f.sort === c.sort && f.order === 'desc' ? 'asc' : 'desc';
          go({ sort: c.sort, order, offset: 0 });
        } }));
      } else th.textContent = c.label;
      return th;
    }));
    const body = el('tbody', { id: 'jobs-body' });
    const status = el('p', { class: 'muted', id: 'jobs-status', role: 'status', 'aria-live': 'polite' });
    const prev = el('button', { type: 'button', text: '← Newer', onclick: () => go({ offset: Math.max(0, f.offset - PAGE_SIZE) }) });
    const next = el('button', { type: 'button', text: 'Older →', onclick: () => go({ offset: f.offset + PAGE_SIZE }) });
    render(el('h1', { text: 'Jobs' }), el('section', { class: 'panel' }, form,
      el('div', { class: 'table-wrap' }, el('table', { id: 'jobs-table' }, el('caption', { class: 'sr-only', text: 'Jobs, live' }), el('thead', {}, head), body)),
      el('div', { class: 'pager' }, prev, next, status)));

    async function load() {
      const q = new URLSearchParams({ limit: PAGE_SIZE, offset: f.offset, sort: f.sort, order: f.order });
      for (const k of ['user', 'state', 'partition', 'node']) if (f[k]) q.set(k, f[k]);
      const data = await api('/v1/jobs?' + q);
      const jobs = data.jobs || [];
      body.replaceChildren(...jobs.map((j) => el('tr', { 'data-job': j.id },
        el('td', {}, el('a', { href: '#/jobs/' + encodeURIComponent(j.id), text: j.id })),
        el('td', { text: j.user }),
        el('td', {}, badge(j.state)),
        el('td', { text: (j.scheduler && j.scheduler.partition) || dash }),
        el('td', { class: 'hide-sm', title: j.nodes.join(', '), text: j.nodes.length > 2 ? `${j.nodes[0]} +${j.nodes.length - 1}` : j.nodes.join(', ') }),
        el('td', { text: fmtTime(j.start_time) }),
        el('td', { class: 'num', text: fmtDuration(runtime(j)) }),
        el('td', { class: 'num', text: fmtPct(j.cpu_usage) }),
        el('td', { class: 'num hide-sm', text: j.memory_usage_bytes ? fmtBytes(j.memory_usage_bytes) : j.memory_usage_mb != null ? fmtBytes(j.memory_usage_mb * MIB) : dash }),
        el('td', { class: 'num hide-sm', text: fmtPct(j.gpu_usage) }))));
      if (!jobs.length) body.replaceChildren(el('tr', {}, el('td', { colspan: COLUMNS.length, class: 'muted', text: 'No jobs match.' })));
      const last = f.offset + jobs.length;
      status.textContent = data.total ? `${f.offset + 1}–${last} of ${data.total}` : '0 jobs';
      prev.disabled = f.offset === 0;
      next.disabled = last >= data.total;
    }
    try {
      await load();
      const parts = await api('/v1/partitions');
      for (const p of parts.partitions || []) {
        if (p.name !== f.partition) partIn.append(el('option', { value: p.name, text: p.name }));
      }
    } catch (e) { failure(e); return; }
    const refresh = debounce(300, () => load().catch(() => {}));
    stream('/v1/stream/jobs?exclude_samples=true', { job_event: refresh, reset: refresh }, refresh);
    every(15000, refresh);
  }

  // ---- job page ------------------------------------------------------------------------------
  async function jobPage(id) {
    document.title = `Job ${id} · jobscope`;
    let job;
    try { job = await api('/v1/jobs/' + encodeURIComponent(id)); } catch (e) {
      if (e.status === 404) { render(el('h1', { text: `Job ${id}` }), el('p', { class: 'banner', role: 'alert', text: 'No job with this id.' })); return; }
      failure(e); return;
    }
    const header = el('div', { id: 'job-header' });
    const latest = el('tbody', { id: 'latest' });
    const auditBody = el('tbody', { id: 'audit' });
    const chartBox = el('div', { class: 'charts', id: 'charts' });
    const reportBox = el('div', { id: 'report', 'aria-live': 'polite' }, el('p', { class: 'muted', text: 'Computing…' }));
    render(header,
      el('section', { class: 'panel', 'aria-labelledby': 'report-h' }, el('h2', { id: 'report-h', text: 'Efficiency report' }), reportBox),
      el('section', { class: 'panel', 'aria-labelledby': 'usage-h' }, el('h2', { id: 'usage-h', text: 'Usage per node' }), chartBox,
        el('div', { class: 'table-wrap' }, el('table', {}, el('caption', { class: 'sr-only', text: 'Latest sample per node' }),
          el('thead', {}, el('tr', {}, ['Node', 'Time', 'CPU', 'Memory', 'GPU'].map((h, i) => el('th', { scope: 'col', class: i > 1 ? 'num' : null, text: h })))),
          latest))),
      el('section', { class: 'panel', 'aria-labelledby': 'audit-h' }, el('h2', { id: 'audit-h', text: 'Audit trail' }),
        el('div', { class: 'table-wrap' }, el('table', {},
          el('thead', {}, el('tr', {}, ['Time', 'Change', 'By', 'Source', 'State after'].map((h) => el('th', { scope: 'col', text: h })))),
          auditBody))));

    function drawHeader() {
      const s = job.scheduler || {};
      const fact = (label, value) => el('div', {}, el('dt', { text: label }), el('dd', { text: value === null || value === undefined || value === '' ? dash : value }));
      const ended = job.exit_code !== null && job.exit_code !== undefined
        ? `exit ${job.exit_code}${job.signal ? ', signal ' + job.signal : ''}${s.raw_state ? ' (' + s.raw_state + ')' : ''}` : (s.raw_state || null);
      header.replaceChildren(
        el('h1', {}, `Job ${job.id}`, badge(job.state)),
        el('section', { class: 'panel', 'aria-label': 'Job facts' }, el('dl', { class: 'facts' },
          fact('User', job.user), fact('Account', s.account), fact('Partition', s.partition),
          fact('Nodes', job.nodes.join(', ')),
          fact('Submitted', fmtTime(s.submit_time)), fact('Started', fmtTime(job.start_time)),
          fact('Ended', fmtTime(job.end_time)), fact('Runtime', fmtDuration(runtime(job))),
          fact('Outcome', ended), fact('Time limit', s.time_limit_minutes ? fmtDuration(s.time_limit_minutes * 60) : null),
          fact('CPUs', job.allocated_cpus), fact('Memory', job.allocated_memory_mb ? fmtBytes(job.allocated_memory_mb * MIB) : null),
          fact('GPUs', job.allocated_gpus || (job.gpu_count ? job.gpu_count : 0)),
          fact('CPU avg / max', job.avg_cpu_usage != null ? `${fmtPct(job.avg_cpu_usage)} / ${fmtPct(job.max_cpu_usage)}` : null),
          fact('Memory max', fmtBytes(maxMemoryOf(job))),
          fact('GPU avg / max', job.avg_gpu_usage != null ? `${fmtPct(job.avg_gpu_usage)} / ${fmtPct(job.max_gpu_usage)}` : null),
          fact('Samples', job.sample_count))));
    }
    drawHeader();

    // Samples by node: {t: [], cpu: [], mem: [], gpu: []}, kept in time order.
    const series = new Map();
    let seen = new Set();
    function add(sample) {
      const key = (sample.node || 'job') + '@' + sample.timestamp;
      if (seen.has(key)) return false;
      seen.add(key);
      const node = sample.node || 'job';
      if (!series.has(node)) series.set(node, { t: [], cpu: [], mem: [], gpu: [], last: null });
      const s = series.get(node);
      const t = Date.parse(sample.timestamp) / 1000;
      let i = s.t.length;
      while (i > 0 && s.t[i - 1] > t) i--;
      s.t.splice(i, 0, t);
      s.cpu.splice(i, 0, sample.cpu_usage ?? null);
      s.mem.splice(i, 0, memoryOf(sample));
      s.gpu.splice(i, 0, sample.gpu_usage ?? null);
      if (!s.last || Date.parse(s.last.timestamp) <= Date.parse(sample.timestamp)) s.last = sample;
      return true;
    }
    const charts = {};
    const hasGpu = () => [...series.values()].some((s) => s.gpu.some((v) => v !== null)) || (job.allocated_gpus || 0) > 0;
    const DEFS = [
      { key: 'cpu', title: 'CPU (% of allocated cores)', fmt: (v) => v == null ? dash : v.toFixed(0) + ' %', range: [0, 100] },
      { key: 'mem', title: 'Memory', fmt: (v) => fmtBytes(v) },
      { key: 'gpu', title: 'GPU utilization', fmt: (v) => v == null ? dash : v.toFixed(0) + ' %', range: [0, 100], gpu: true },
    ];
    function build() {
      const nodes = [...series.keys()].sort();
      const fg = css('--fg') || '#888';
      const grid = css('--line') || '#ccc';
      for (const d of DEFS) {
        if (d.gpu && !hasGpu()) continue;
        const tables = nodes.map((n) => [series.get(n).t, series.get(n)[d.key]]);
        const data = tables.length ? uPlot.join(tables) : [[]];
        const points = nodes.reduce((a, n) => a + series.get(n)[d.key].filter((v) => v !== null).length, 0);
        let c = charts[d.key];
        if (c && c.nodes.join() === nodes.join()) {
          c.plot.setData(data);
        } else {
          if (c) { c.plot.destroy(); c.fig.remove(); }
          const fig = el('figure', { class: 'chart', id: 'chart-' + d.key });
          const cap = el('figcaption', { text: d.title });
          fig.append(cap);
          chartBox.append(fig);
          const width = Math.max(280, fig.clientWidth || chartBox.clientWidth || 600);
          const opts = {
            width, height: 220,
            scales: { x: { time: true }, y: d.range ? { range: d.range } : { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
            axes: [
              { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } },
              { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 70, values: (u, vals) => vals.map(d.fmt) },
            ],
            series: [{}].concat(nodes.map((n, i) => ({
              label: n, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true,
              value: (u, v) => d.fmt(v), points: { show: false },
            }))),
            legend: { live: true },
          };
          const plot = new uPlot(opts, data, fig);
          c = charts[d.key] = { plot, fig, nodes };
          page.charts.push({ destroy: () => plot.destroy() });
        }
        c.fig.dataset.points = points;
        c.fig.dataset.series = nodes.length;
        c.fig.setAttribute('aria-label', `${d.title}: ${nodes.length} node${nodes.length === 1 ? '' : 's'}, ${points} samples`);
      }
      latest.replaceChildren(...nodes.map((n) => {
        const l = series.get(n).last;
        return el('tr', { 'data-node': n }, el('th', { scope: 'row', text: n }), el('td', { text: fmtTime(l.timestamp) }),
          el('td', { class: 'num cpu', text: fmtPct(l.cpu_usage) }), el('td', { class: 'num', text: fmtBytes(memoryOf(l)) }),
          el('td', { class: 'num', text: fmtPct(l.gpu_usage) }));
      }));
      if (!nodes.length) latest.replaceChildren(el('tr', {}, el('td', { colspan: 5, class: 'muted', text: job.state === 'pending' ? 'The job has not started yet.' : 'No samples yet.' })));
    }
    page.onResize = debounce(200, () => {
      for (const c of Object.values(charts)) c.plot.setSize({ width: Math.max(280, c.fig.clientWidth), height: 220 });
    });
    window.addEventListener('resize', page.onResize);

    // The verdict (GET /v1/jobs/{id}/report): figures, grade and advice; provisional while the job runs.
    function drawReport(r) {
      const ratio = (v) => v == null ? 'not measured' : (v * 100).toFixed(0) + ' %';
      const fact = (label, value) => el('div', {}, el('dt', { text: label }), el('dd', { text: value }));
      const gpus = r.gpu && r.gpu.devices && r.gpu.devices.length
        ? (r.gpu.utilization_mean == null ? 'not measured' : r.gpu.utilization_mean.toFixed(0) + ' % mean') : 'none';
      reportBox.replaceChildren(
        el('p', {}, el('span', { class: 'grade g-' + (r.grade || 'none'), text: r.grade ? 'Grade ' + r.grade : 'No grade' }),
          r.provisional ? ' provisional: the job is still running' : ''),
        el('dl', { class: 'facts' },
          fact('CPU efficiency', ratio(r.cpu && r.cpu.efficiency)),
          fact('Cores busy / allocated', r.cpu && r.cpu.cores_busy != null ? `${r.cpu.cores_busy.toFixed(1)} / ${r.cpu.allocated ?? dash}` : 'not measured'),
          fact('Memory peak / request', ratio(r.memory && r.memory.use_ratio)),
          fact('GPUs', gpus),
          fact('Time used of limit', ratio(r.time && r.time.use_ratio)),
          fact('Unused CPU-hours', r.cpu_hours_unused == null ? dash : r.cpu_hours_unused.toFixed(1))),
        r.advice && r.advice.length
          ? el('ul', { class: 'advice' }, ...r.advice.map((a) => el('li', { 'data-topic': a.topic, text: a.text })))
          : el('p', { class: 'muted', text: r.samples ? 'No advice: every measured figure is within the site\'s thresholds.' : 'No samples yet.' }),
        r.not_measured && r.not_measured.length ? el('p', { class: 'muted', text: 'Not measured: ' + r.not_measured.join(', ') + '.' }) : '');
    }
    async function loadReport() {
      drawReport(await api(`/v1/jobs/${encodeURIComponent(id)}/report`));
    }
    async function loadAudit() {
      const trail = await api(`/v1/jobs/${encodeURIComponent(id)}/audit`);
      const rows = Array.isArray(trail) ? trail : (trail.events || trail.audit || []);
      auditBody.replaceChildren(...rows.map((a) => el('tr', {},
        el('td', { text: fmtTime(a.changed_at) }), el('td', { text: a.change_type }),
        el('td', { text: a.changed_by }), el('td', { text: a.source }),
        el('td', {}, a.job_snapshot && a.job_snapshot.state ? badge(a.job_snapshot.state) : dash))));
    }
    // Samples from `since` on (all when null); true when any was new.
    async function loadSamples(since) {
      const query = new URLSearchParams({ limit: '10000' });
      if (since) query.set('start_time', since);
      const history = await api(`/v1/jobs/${encodeURIComponent(id)}/metrics?${query}`);
      let added = false;
      for (const s of (history.samples || []).slice().reverse()) added = add(s) || added;
      return added;
    }
    // The newest sample drawn, over every node's series.
    function newestSample() {
      let newest = null;
      for (const s of series.values()) {
        if (s.last && (!newest || Date.parse(s.last.timestamp) > Date.parse(newest))) newest = s.last.timestamp;
      }
      return newest;
    }
    try {
      await loadSamples(null);
      build();
      await loadAudit();
    } catch (e) { failure(e); return; }
    loadReport().catch(() => reportBox.replaceChildren(el('p', { class: 'muted', text: 'No report could be computed.' })));
    const reloadReport = debounce(3000, () => loadReport().catch(() => {}));
    const redraw = debounce(250, build);
    const reloadAudit = debounce(500, () => loadAudit().catch(() => {}));
    // Samples carry no aggregates: the header is refetched now and then while they arrive.
    const reloadJob = debounce(2000, () => api('/v1/jobs/' + encodeURIComponent(id)).then((j) => { job = j; drawHeader(); }).catch(() => {}));
    stream('/v1/stream/jobs/' + encodeURIComponent(id), {
      job_sample: (d) => { if (d.sample && add(d.sample)) { redraw(); reloadJob(); reloadReport(); } },
      job_event: (d, envelope) => {
        // The verdict after the job ends carries the report itself and only a summary of the job.
        if (envelope.type === 'job_report') { if (d.report) drawReport(d.report); return; }
        if (d.job) { job = d.job; drawHeader(); }
        reloadAudit(); reloadReport();
      },
      stream_closed: () => setLive(false, 'job finished'),
    }, () => {
      loadSamples(newestSample()).then((added) => { if (added) redraw(); }).catch(() => {});
      reloadAudit(); reloadJob(); reloadReport();
    });
    every(10000, () => { if (job.state === 'running') drawHeader(); });
  }

  // ---- routing -------------------------------------------------------------------------------
  function route() {
    teardown();
    const hash = location.hash || '#/';
    const [path, query] = hash.slice(1).split('?');
    const params = new URLSearchParams(query || '');
    const section = path.startsWith('/jobs') ? 'jobs' : path === '/' ? 'cluster' : '';
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    setLive(false, 'connecting');
    if (path === '/' || path === '') clusterPage();
    else if (path === '/jobs') jobsPage(params);
    else if (path.startsWith('/jobs/')) jobPage(decodeURIComponent(path.slice('/jobs/'.length)));
    else if (path === '/signin') signInPage();
    else render(el('h1', { text: 'Not found' }), el('p', {}, el('a', { href: '#/', text: 'Back to the cluster' })));
    main.focus({ preventScroll: true });
  }
  window.addEventListener('hashchange', route);
  updateSigninLink();
  route();
})();
