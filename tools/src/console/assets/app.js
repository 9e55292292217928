'use strict';
// The rollcall console's page: no framework, no build step. Everything the fleet says is
// put on the page as text (textContent), never as markup.

const TOKEN = new URLSearchParams(location.search).get('token') || '';
const state = { me: null, stream: null, selected: [], fromQuestion: null };
const view = document.getElementById('view');
// Rows drawn at most: a grid of a whole fleet's host names would be 100,000 rows.
const MAX_ROWS = 500;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function showError(msg) {
  const box = document.getElementById('error');
  box.textContent = msg || '';
  box.hidden = !msg;
}

async function api(path, opts = {}) {
  const headers = { 'x-rollcall-token': TOKEN };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch('/api' + path, {
    method: opts.method || (opts.body !== undefined ? 'POST' : 'GET'),
    headers,
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined,
  });
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || (r.status + ' ' + r.statusText));
  return body;
}

function withToken(path) {
  return '/api' + path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(TOKEN);
}

function live(path, name, onData) {
  if (state.stream) state.stream.close();
  const es = new EventSource(withToken(path));
  es.addEventListener(name, (e) => { showError(''); onData(JSON.parse(e.data), e); });
  es.addEventListener('problem', (e) => showError(JSON.parse(e.data).error));
  state.stream = es;
  return es;
}

const can = (role) => {
  const order = ['viewer', 'operator', 'admin'];
  return state.me && order.indexOf(state.me.role) >= order.indexOf(role);
};

function debounce(f, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => f(...a), ms); };
}

// ---- Home: the search box, favourites, latest questions ----

async function askText(text) {
  try {
    const r = await api('/ask', { body: { text } });
    location.hash = '#/q/' + r.id;
  } catch (e) { showError(e.message); }
}

function renderHome() {
  const list = el('ul', { class: 'plain', id: 'suggestions' });
  let current = [];
  const search = el('input', {
    type: 'search', id: 'search', autocomplete: 'off', autofocus: true,
    placeholder: 'Ask in plain words, e.g. machines with chrome',
  });
  const suggest = debounce(async () => {
    const q = search.value;
    if (!q.trim()) { list.replaceChildren(); current = []; return; }
    try {
      const s = await api('/search?q=' + encodeURIComponent(q));
      if (search.value !== q) return;
      current = s;
      list.replaceChildren(...s.map((x, i) => el('li', { class: 'suggestion' + (i === 0 ? ' first' : '') },
        el('button', { type: 'button', class: 'pick', onclick: () => askText(x.question) }, x.question),
        x.not_understood.length ? el('div', { class: 'guess', text: 'a guess: not understood ' + x.not_understood.join(', ') }) : null)));
    } catch (e) { showError(e.message); }
  }, 120);
  search.addEventListener('input', suggest);
  search.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') askText(current.length ? current[0].question : search.value);
  });
  const favourites = el('div', { class: 'cards', id: 'favourites' }, el('span', { class: 'muted', text: 'loading…' }));
  const latest = el('ul', { class: 'plain', id: 'latest' });
  view.replaceChildren(
    el('h1', { text: 'Ask the fleet' }), search, list,
    el('h2', { text: 'Favourites' }), favourites,
    el('h2', { text: 'Latest questions' }), latest);
  search.focus();
  api('/saved').then((saved) => {
    if (!saved.length) { favourites.replaceChildren(el('span', { class: 'muted', text: 'No saved questions yet (rollcall saved add).' })); return; }
    favourites.replaceChildren(...saved.map((s) => el('div', { class: 'card favourite' },
      el('strong', { text: s.name }), el('div', { class: 'muted', text: s.text }),
      s.last ? el('div', {},
        el('a', { href: '#/q/' + s.last.id, text: 'last run: answered ' + s.last.answered + ' of ' + s.last.expected }),
        el('ul', {}, s.last.top.map((t) => el('li', { text: t.cells.join(' · ') + ' — ' + t.count })))) : el('div', { class: 'muted', text: 'not run yet' }),
      can('operator') ? el('button', { type: 'button', class: 'secondary', onclick: () => askText(s.text) }, 'Ask now') : null)));
  }).catch((e) => favourites.replaceChildren(el('span', { class: 'muted', text: e.message })));
  api('/questions').then((qs) => {
    latest.replaceChildren(...qs.slice(0, 15).map((q) => el('li', { class: 'latest' },
      el('a', { href: '#/q/' + q.id, text: '#' + q.id + ' ' + q.text }),
      el('span', { class: 'muted', text: '  answered ' + q.answered + ' of ' + q.expected + (q.open ? '' : ' · closed') }))));
  }).catch((e) => showError(e.message));
}

// ---- Question view: the live grid ----

function renderQuestion(id) {
  const sort = { col: null, desc: true };
  const expanded = new Map();   // row key -> {machines, total} or null while loading
  const selected = new Set();   // row keys
  let last = null;
  const title = el('h1', { id: 'question-text', text: 'Question #' + id });
  const progress = el('div', { id: 'progress', text: 'waiting for answers…' });
  const meter = el('div', { class: 'meter' }, el('div'));
  const filter = el('input', { type: 'search', id: 'row-filter', placeholder: 'filter rows' });
  const deploy = can('operator') ? el('button', { type: 'button', id: 'deploy-selected', disabled: true }, 'Act on selected rows') : null;
  const table = el('table', { id: 'grid' });
  const rowNote = el('div', { id: 'row-note', class: 'muted' });
  const chart = el('div', { id: 'chart' });
  const notAnswered = el('details', { id: 'not-answered' });
  const problems = el('details', { id: 'problems' });
  view.replaceChildren(title, progress, meter,
    el('div', { class: 'toolbar' }, filter,
      el('a', { id: 'export-csv', href: withToken('/questions/' + id + '/export.csv'), text: 'Export CSV' }),
      el('a', { id: 'export-json', href: withToken('/questions/' + id + '/export.json'), text: 'Export JSON' }),
      deploy),
    el('div', { class: 'split' }, el('div', { class: 'grid-wrap' }, table, rowNote), chart),
    notAnswered, problems);

  const key = (cells) => JSON.stringify(cells);
  filter.addEventListener('input', () => last && draw(last));
  if (deploy) {
    deploy.addEventListener('click', async () => {
      const machines = [];
      try {
        for (const k of selected) {
          let from = 0;
          for (;;) {
            const r = await api('/questions/' + id + '/machines', { body: { cells: JSON.parse(k), from } });
            machines.push(...r.machines.map((m) => m.id));
            from += r.machines.length;
            if (!r.machines.length || from >= r.total) break;
          }
        }
      } catch (e) { showError(e.message); return; }
      state.selected = [...new Set(machines)];
      state.fromQuestion = id;
      location.hash = '#/actions';
    });
  }

  async function expand(cells) {
    const k = key(cells);
    if (expanded.has(k)) { expanded.delete(k); draw(last); return; }
    expanded.set(k, null);
    draw(last);
    try {
      const r = await api('/questions/' + id + '/machines', { body: { cells } });
      if (expanded.has(k)) expanded.set(k, r);
    } catch (e) { expanded.delete(k); showError(e.message); }
    draw(last);
  }

  function draw(p) {
    title.textContent = '#' + p.id + ' ' + p.text;
    progress.textContent = 'answered ' + p.answered + ' of ' + p.expected;
    progress.append(el('span', { class: 'muted', id: 'matched', text: ' · ' + p.matched + ' matched' + (p.fanned_out ? '' : ' · still going round the rings') }));
    meter.firstChild.style.width = (p.expected ? Math.min(100, 100 * p.answered / p.expected) : 0) + '%';
    const f = filter.value.trim().toLowerCase();
    let rows = p.rows.filter((r) => !f || r.cells.some((c) => c.toLowerCase().includes(f)));
    if (sort.col !== null) {
      const get = (r) => sort.col === 'count' ? r.count : r.cells[sort.col];
      rows = rows.slice().sort((a, b) => {
        const x = get(a), y = get(b);
        const o = typeof x === 'number' ? x - y : String(x).localeCompare(String(y), undefined, { numeric: true });
        return sort.desc ? -o : o;
      });
    }
    const th = (label, col, cls) => el('th', {
      class: (cls || '') + (sort.col === col ? (sort.desc ? ' sorted-desc' : ' sorted-asc') : ''),
      dataset: { col: String(col) },
      onclick: () => { if (sort.col === col) sort.desc = !sort.desc; else { sort.col = col; sort.desc = col === 'count'; } draw(last); },
    }, label);
    const head = el('tr', {}, el('th', { text: '' }), p.columns.map((c, i) => th(c, i)), th('Count', 'count', 'num'), el('th', { class: 'num', text: 'Share' }));
    const body = [];
    const shown = rows.slice(0, MAX_ROWS);
    rowNote.textContent = rows.length > shown.length
      ? 'showing ' + shown.length + ' of ' + rows.length + ' rows: filter or sort to see others'
      : rows.length + (rows.length === 1 ? ' row' : ' rows') + (f ? ' match the filter' : '');
    for (const r of shown) {
      const k = key(r.cells);
      const box = el('input', { type: 'checkbox', class: 'select', checked: selected.has(k) });
      box.addEventListener('click', (e) => {
        e.stopPropagation();
        if (box.checked) selected.add(k); else selected.delete(k);
        if (deploy) deploy.disabled = selected.size === 0;
      });
      body.push(el('tr', { class: 'row', onclick: () => expand(r.cells) },
        el('td', {}, box), r.cells.map((c) => el('td', { class: 'cell', text: c })),
        el('td', { class: 'count', text: String(r.count) }),
        el('td', { class: 'share', text: (p.answered ? (100 * r.count / p.answered).toFixed(1) : '0.0') + ' %' })));
      if (expanded.has(k)) {
        const m = expanded.get(k);
        body.push(el('tr', { class: 'expansion' }, el('td', { colspan: String(p.columns.length + 3) },
          m === null ? el('span', { class: 'muted', text: 'loading machines…' }) : [
            el('div', { class: 'muted', text: m.total + (m.total === 1 ? ' machine' : ' machines') + (m.total > m.machines.length ? ' (first ' + m.machines.length + ' shown)' : '') }),
            el('ul', { class: 'machines' }, m.machines.map((x) => el('li', { class: 'machine', title: x.id, text: x.host || x.id })))])));
      }
    }
    table.replaceChildren(el('thead', {}, head), el('tbody', {}, body));
    if (deploy) deploy.disabled = selected.size === 0;
    const top = p.rows.slice(0, 12);
    const max = Math.max(1, ...top.map((r) => r.count));
    chart.replaceChildren(el('strong', { text: 'Distribution' }), ...top.map((r) => {
      const bar = el('div', { class: 'bar' });
      bar.style.width = (100 * r.count / max) + '%';
      return el('div', { class: 'bar-row' }, el('span', { class: 'bar-label', title: r.cells.join(' · '), text: r.cells.join(' · ') }),
        el('div', { class: 'bar-track' }, bar), el('span', { text: String(r.count) }));
    }));
    const more = (n, shown) => n > shown ? ' (first ' + shown + ')' : '';
    const naTotal = p.cut.not_answered_total || p.not_answered.length;
    notAnswered.replaceChildren(el('summary', { text: 'Not answered: ' + (p.expected - Math.min(p.answered, p.expected)) + more(naTotal, p.not_answered.length) }),
      el('ul', { class: 'machines' }, p.not_answered.map(([idn, host]) => el('li', { title: idn, text: host || idn }))));
    const prTotal = p.cut.problems_total || p.problems.length;
    problems.replaceChildren(el('summary', { text: 'Sensor problems: ' + prTotal }),
      el('ul', {}, p.problems.map(([idn, what]) => el('li', { text: idn + ': ' + what }))));
  }

  let updates = 0;
  live('/questions/' + id + '/stream', 'progress', (p) => {
    last = p;
    updates += 1;
    progress.dataset.updates = String(updates);
    draw(p);
    progress.dataset.updates = String(updates);
  });
}

// ---- Rings ----

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const c of children.flat()) if (c) e.append(c);
  return e;
}

const HEALTH_COLOUR = { Ok: '#2f9e55', Slow: '#d99a00', Suspect: '#e0601b', Offline: '#c62828' };

// A ring as the server sees it: its members round a circle in ring order, coloured by
// health, its leaders marked (F leads the forward end, B the backward one) and joined to
// the server in the middle when they hold a link to it.
function ringPicture(ring) {
  const size = 230, c = size / 2, rad = 92;
  const ms = ring.members;
  const n = ms.length;
  const pos = (i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(n, 1);
    return [c + rad * Math.cos(a), c + rad * Math.sin(a)];
  };
  const parts = [svg('circle', { cx: c, cy: c, r: rad, fill: 'none', stroke: '#c5cedb', 'stroke-width': 2 })];
  ms.forEach((m, i) => {
    if (m.leads.forward || m.leads.backward) {
      const [x, y] = pos(i);
      parts.push(svg('line', { x1: c, y1: c, x2: x, y2: y, stroke: '#5aa0ff', 'stroke-width': 1.5, 'stroke-dasharray': '4 3' }));
    }
  });
  parts.push(svg('rect', { x: c - 26, y: c - 12, width: 52, height: 24, rx: 4, fill: '#1d2430' }),
    svg('text', { x: c, y: c + 4, 'text-anchor': 'middle', 'font-size': 11, fill: '#fff' }, document.createTextNode('server')));
  ms.forEach((m, i) => {
    const [x, y] = pos(i);
    const leader = m.leads.forward || m.leads.backward;
    const dot = svg('circle', {
      cx: x, cy: y, r: leader ? 8 : (n > 60 ? 3 : 5), fill: HEALTH_COLOUR[m.health] || '#888',
      stroke: leader ? '#1d2430' : 'none', 'stroke-width': 2, class: 'dot' + (leader ? ' leader-dot' : ''),
    }, svg('title', {}, document.createTextNode(m.hostname + ' · ' + m.health.toLowerCase())));
    parts.push(dot);
    if (leader) {
      const label = (m.leads.forward ? 'F' : '') + (m.leads.backward ? 'B' : '');
      const [lx, ly] = [c + (rad + 16) * (x - c) / rad, c + (rad + 16) * (y - c) / rad];
      parts.push(svg('text', { x: lx, y: ly + 4, 'text-anchor': 'middle', 'font-size': 11, 'font-weight': 700, fill: '#1d2430' }, document.createTextNode(label)));
    }
  });
  if (ring.members_total) {
    parts.push(svg('text', { x: c, y: c + 30, 'text-anchor': 'middle', 'font-size': 11, fill: '#667085' },
      document.createTextNode(ring.members_total + ' members')));
  }
  return svg('svg', { width: size, height: size, viewBox: '0 0 ' + size + ' ' + size, class: 'ring-picture' }, parts);
}

function renderRings() {
  const summary = el('div', { id: 'rings-summary', class: 'muted', text: 'loading…' });
  const list = el('div', { id: 'rings', class: 'ring-grid' });
  view.replaceChildren(el('h1', { text: 'Rings' }), summary, list);
  live('/rings/stream', 'rings', (r) => {
    const machines = r.rings.reduce((n, x) => n + (x.members_total || x.members.length), 0) + (r.isolated_total || r.isolated.length);
    summary.textContent = r.rings.length + ' rings · ' + machines + ' machines · the server holds ' + r.server_connections + ' connections (' + r.ring_connections + ' ring leaders\' links)';
    list.replaceChildren(...r.rings.map((ring) => {
      const count = ring.members_total || ring.members.length;
      const leaders = ring.members.filter((m) => m.leads.forward || m.leads.backward).length;
      const bad = ring.members.filter((m) => m.health !== 'Ok').length;
      return el('div', { class: 'ring', dataset: { ring: ring.ring } },
        el('h3', { text: ring.ring }),
        el('div', { class: 'muted', text: count + ' members · ' + leaders + ' leaders · ' + ring.leader_links + ' leader links to the server' + (bad ? ' · ' + bad + ' slow, suspect or offline' : '') + (ring.members_total ? ' · first and last listed' : '') }),
        el('div', { class: 'ring-body' }, ringPicture(ring),
          el('div', { class: 'ring-members' }, el('table', { class: 'members' },
            el('thead', {}, el('tr', {}, ['Host', 'Address', 'Health', 'Leads'].map((h) => el('th', { text: h })))),
            el('tbody', {}, ring.members.map((m) => {
              const leads = [m.leads.forward ? 'forward' : null, m.leads.backward ? 'backward' : null].filter(Boolean).join(' and ');
              return el('tr', { class: 'member' + (leads ? ' leader' : ''), title: m.id },
                el('td', { text: m.hostname }), el('td', { text: m.addr }),
                el('td', { class: 'health health-' + m.health.toLowerCase(), text: m.health.toLowerCase() }),
                el('td', { class: 'leads', text: leads }));
            }))))));
    }), ...(r.isolated.length ? [el('div', { class: 'ring' }, el('h3', { text: 'Isolated (no ring)' }),
      el('ul', { class: 'machines' }, r.isolated.map((m) => el('li', { title: m.id, text: m.hostname + ' (' + m.health.toLowerCase() + ')' }))))] : []));
  });
}

// ---- Actions: deploy, approvals, statuses ----

function renderActions() {
  const parts = [el('h1', { text: 'Actions' })];
  if (can('operator')) {
    const pkg = el('select', { id: 'package' });
    const params = el('input', { type: 'text', id: 'params', placeholder: 'parameters, separated by spaces' });
    const filterBox = el('input', { type: 'text', id: 'target-filter', placeholder: 'e.g. Installed Applications contains "chrome"' });
    const radio = (value, label, checked) => el('label', {}, el('input', { type: 'radio', name: 'target', value, checked }), ' ' + label);
    const hasSel = state.selected.length > 0;
    const result = el('div', { id: 'deploy-result', class: 'wide' });
    const form = el('form', { id: 'deploy' },
      el('label', { for: 'package', text: 'Package' }), pkg,
      el('label', { for: 'params', text: 'Parameters' }), params,
      el('span', { text: 'Machines' }),
      el('div', {},
        hasSel ? radio('selected', 'the ' + state.selected.length + ' machines of the selected rows (question #' + state.fromQuestion + ')', true) : null, ' ',
        radio('filter', 'that match a filter', !hasSel), ' ', radio('all', 'all', false)),
      el('label', { for: 'target-filter', text: 'Filter' }), filterBox,
      el('div', { class: 'wide' }, el('button', { type: 'submit', id: 'deploy-submit' }, 'Deploy')),
      result);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const target = form.querySelector('input[name=target]:checked').value;
      const body = { package: pkg.value, params: params.value.split(/\s+/).filter(Boolean) };
      if (target === 'selected') body.machines = state.selected;
      else if (target === 'filter') body.filter = filterBox.value;
      else body.all = true;
      try {
        const a = await api('/actions', { body });
        result.textContent = 'Action #' + a.id + ': ' + a.phase + ' (' + a.targeted + ' machines)';
        result.dataset.id = a.id;
      } catch (err) { result.textContent = err.message; }
    });
    api('/packages').then((ps) => pkg.replaceChildren(...ps.map((p) => el('option', { value: p.name.split(' ')[0], text: p.name + ' — ' + p.what })))).catch((e) => showError(e.message));
    parts.push(el('h2', { text: 'Deploy' }), form);
  }
  const approvals = el('div', { id: 'approvals' });
  const table = el('table', { id: 'actions' });
  // Actions whose machines are shown (a click on the row), with their last report.
  const open = new Map();
  async function machinesOf(id) {
    try {
      open.set(id, await api('/actions/' + id));
    } catch (e) { showError(e.message); }
    if (last) draw(last);
  }
  let last = null;
  parts.push(el('h2', { text: 'Awaiting approval' }), approvals, el('h2', { text: 'Actions' }), table);
  view.replaceChildren(...parts);
  const draw = (list) => {
    const waiting = list.filter((a) => a.awaiting_approval);
    approvals.replaceChildren(...(waiting.length ? waiting.map((a) => el('div', { class: 'approval', dataset: { id: String(a.id) } },
      el('span', { class: 'what', text: '#' + a.id + ' ' + a.description + ' — issued by ' + a.issued_by + ', ' + a.targeted + ' machines' }),
      can('admin') ? el('button', { type: 'button', class: 'approve', onclick: () => decide(a.id, 'approve') }, 'Approve') : null,
      can('admin') ? el('button', { type: 'button', class: 'deny danger', onclick: () => decide(a.id, 'deny') }, 'Deny') : null))
      : [el('span', { class: 'muted', text: 'Nothing awaits approval.' })]));
    const kinds = ['completed', 'failed'];
    table.replaceChildren(
      el('thead', {}, el('tr', {}, ['#', 'Action', 'Phase', 'Issued by', 'Approved by', 'Machines', 'Completed', 'Failed', 'Other', ''].map((h) => el('th', { text: h })))),
      el('tbody', {}, list.map((a) => {
        const other = Object.entries(a.counts).filter(([k]) => !kinds.includes(k)).map(([k, v]) => k + ' ' + v).join(', ');
        const row = el('tr', { class: 'action', dataset: { id: String(a.id) }, title: 'show its machines',
          onclick: () => { if (open.has(a.id)) { open.delete(a.id); draw(last); } else machinesOf(a.id); } },
          el('td', { text: String(a.id) }), el('td', { text: a.description }),
          el('td', { class: 'phase', text: a.phase }), el('td', { text: a.issued_by }),
          el('td', { text: a.approved_by || '' }), el('td', { class: 'targeted', text: String(a.targeted) }),
          el('td', { class: 'completed', text: String(a.counts.completed || 0) }),
          el('td', { class: 'failed', text: String(a.counts.failed || 0) }),
          el('td', { text: other }),
          el('td', { class: a.done ? 'status-done done' : 'pending', text: a.done ? 'done' : '' }));
        if (!open.has(a.id)) return [row];
        const r = open.get(a.id);
        return [row, el('tr', { class: 'expansion' }, el('td', { colspan: '10' },
          el('div', { class: 'muted', text: r.machines_total + (r.machines_total === 1 ? ' machine' : ' machines') + (r.machines_total > r.machines.length ? ' (first ' + r.machines.length + ' shown)' : '') }),
          el('ul', { class: 'plain action-machines' }, r.machines.map((m) => el('li', { class: 'action-machine', dataset: { status: m.status } },
            el('strong', { text: m.id }), ' ', el('span', { text: m.status }), m.output ? el('pre', { text: m.output }) : null)))))];
      }).flat()));
  };
  live('/actions/stream', 'actions', (list) => {
    last = list;
    // Open actions' machines are asked for again whenever the actions changed.
    for (const id of open.keys()) machinesOf(id);
    draw(list);
  });
}

async function decide(id, what) {
  try { await api('/actions/' + id + '/' + what, { body: {} }); } catch (e) { showError(e.message); }
}

// ---- Audit ----

function renderAudit() {
  const filter = el('input', { type: 'search', id: 'audit-filter', placeholder: 'filter: who, what, outcome' });
  const chain = el('div', { id: 'audit-chain', class: 'muted' });
  const table = el('table', { id: 'audit' });
  view.replaceChildren(el('h1', { text: 'Audit log' }), el('div', { class: 'toolbar' }, filter, chain), table);
  let entries = [];
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const shown = entries.filter((e) => !f || [e.who, e.role, e.what, e.outcome].some((x) => x.toLowerCase().includes(f)));
    table.replaceChildren(el('thead', {}, el('tr', {}, ['#', 'When', 'Who', 'Role', 'What', 'Outcome'].map((h) => el('th', { text: h })))),
      el('tbody', {}, shown.slice().reverse().map((e) => el('tr', { class: 'entry' },
        el('td', { text: String(e.seq) }), el('td', { text: new Date(e.at_unix_ms).toISOString().replace('T', ' ').slice(0, 19) }),
        el('td', { text: e.who }), el('td', { text: e.role }), el('td', { text: e.what }), el('td', { text: e.outcome })))));
  };
  filter.addEventListener('input', draw);
  if (state.stream) { state.stream.close(); state.stream = null; }
  api('/audit?last=1000').then((a) => {
    entries = a.entries;
    chain.textContent = a.chain.intact ? 'chain intact (' + a.chain.entries + ' entries)' : 'CHAIN BROKEN: ' + a.chain.broken;
    draw();
  }).catch((e) => { chain.textContent = e.message; });
}

// ---- Routing ----

function route() {
  showError('');
  if (state.stream) { state.stream.close(); state.stream = null; }
  const h = location.hash || '#/';
  const page = h.startsWith('#/q/') ? 'home' : (h.slice(2).split('/')[0] || 'home');
  document.querySelectorAll('header nav a').forEach((a) => a.classList.toggle('current', a.dataset.page === page));
  const q = h.match(/^#\/q\/(\d+)$/);
  if (q) return renderQuestion(Number(q[1]));
  if (h === '#/rings') return renderRings();
  if (h === '#/actions') return renderActions();
  if (h === '#/audit') return renderAudit();
  return renderHome();
}

(async function start() {
  try {
    state.me = await api('/me');
  } catch (e) {
    showError(e.message);
    return;
  }
  document.getElementById('me').textContent = state.me.name + ' · ' + state.me.role + ' · ' + state.me.server;
  document.getElementById('nav-audit').hidden = !can('admin');
  document.body.dataset.role = state.me.role;
  window.addEventListener('hashchange', route);
  route();
})();
