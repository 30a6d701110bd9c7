// Shoal operator dashboard. Plain ES2020, no dependencies; served by the node itself.
// Every piece of server-provided text goes into the page through textContent or attributes,
// never through innerHTML.
'use strict';

(() => {
  // ---------------------------------------------------------------------------------------
  // Helpers

  const $ = (id) => document.getElementById(id);
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const intFormat = new Intl.NumberFormat('en-US');

  /** Creates an element; `props.text` sets textContent, `props.className` the class, the rest
   * are attributes (null/false skipped). Children are nodes or strings (added as text). */
  function h(tag, props, children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (k === 'text') e.textContent = String(v);
        else if (k === 'className') e.className = v;
        else e.setAttribute(k, v === true ? '' : String(v));
      }
    }
    if (children) {
      for (const c of children) {
        if (c !== null && c !== undefined && c !== false) e.append(c);
      }
    }
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    return e;
  }

  function setText(node, text) {
    if (node && node.textContent !== text) node.textContent = text;
  }

  const isNum = (n) => typeof n === 'number' && Number.isFinite(n);
  const nowSecs = () => Date.now() / 1000;

  function fmtInt(n) {
    return isNum(n) ? intFormat.format(Math.round(n)) : '—';
  }

  /** A rate or small decimal: integers above 100, one decimal above 10, two below. */
  function fmtNum(n) {
    if (!isNum(n)) return '—';
    if (Number.isInteger(n)) return intFormat.format(n);
    const a = Math.abs(n);
    if (a >= 100) return intFormat.format(Math.round(n));
    if (a >= 10) return n.toFixed(1);
    return n.toFixed(2);
  }

  function fmtBytes(n) {
    if (!isNum(n)) return '—';
    const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];
    let v = n;
    let i = 0;
    while (Math.abs(v) >= 1000 && i < units.length - 1) {
      v /= 1000;
      i += 1;
    }
    return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
  }

  function fmtMs(n) {
    return isNum(n) ? `${fmtNum(n)} ms` : '—';
  }

  function fmtDuration(secs) {
    const s = Math.max(0, Math.floor(secs));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    const hrs = Math.floor(m / 60);
    if (hrs < 24) return `${hrs} h ${m % 60} min`;
    const d = Math.floor(hrs / 24);
    return `${d} d ${hrs % 24} h`;
  }

  function fmtUptime(secs) {
    const s = Math.max(0, Math.floor(secs));
    const d = Math.floor(s / 86400);
    const hrs = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    const parts = [];
    if (d) parts.push(`${d} d`);
    if (d || hrs) parts.push(`${hrs} h`);
    if (d || hrs || m) parts.push(`${m} min`);
    parts.push(`${s % 60} s`);
    return parts.join(' ');
  }

  function ago(t) {
    return isNum(t) ? `${fmtDuration(nowSecs() - t)} ago` : '—';
  }

  function until(t) {
    if (!isNum(t)) return '—';
    const d = t - nowSecs();
    return d <= 0 ? 'expired' : fmtDuration(d);
  }

  function fmtTime(t) {
    return isNum(t) ? new Date(t * 1000).toLocaleString() : '—';
  }

  function isoTime(t) {
    try {
      return isNum(t) ? new Date(t * 1000).toISOString() : null;
    } catch (_) {
      return null;
    }
  }

  function shortId(id) {
    const s = String(id ?? '');
    return s.length > 18 ? `${s.slice(0, 8)}…${s.slice(-6)}` : s;
  }

  /** A peer id shortened, with the full id in its title. */
  function peerCode(id) {
    return h('code', { className: 'peer', title: String(id ?? ''), text: shortId(id) });
  }

  function yesNo(b) {
    if (b === true) return 'yes';
    if (b === false) return 'no';
    return '—';
  }

  function errorText(err) {
    if (err && typeof err.message === 'string' && err.message !== '') return err.message;
    return String(err);
  }

  // ---------------------------------------------------------------------------------------
  // JSON-RPC 2.0 over one WebSocket

  class RpcError extends Error {
    constructor(e) {
      super(typeof e.message === 'string' ? e.message : `error ${e.code}`);
      this.name = 'RpcError';
      this.code = e.code;
      this.data = e.data;
    }
  }

  const CALL_TIMEOUT_MS = 30000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 10000;

  class Rpc {
    constructor(hooks) {
      this.hooks = hooks;
      this.ws = null;
      this.token = null;
      this.connected = false;
      this.everConnected = false;
      this.stopped = true;
      this.nextId = 1;
      this.pending = new Map();
      this.subs = [];
      this.subIds = new Map();
      this.early = new Map();
      this.bytesIn = 0;
      this.bytesOut = 0;
      this.backoff = BACKOFF_MIN_MS;
      this.retryTimer = null;
    }

    connect(token) {
      this.token = token || null;
      this.stopped = false;
      this.backoff = BACKOFF_MIN_MS;
      this._open();
    }

    url() {
      const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
      let url = `${scheme}${location.host}/`;
      if (this.token) url += `?access_token=${encodeURIComponent(this.token)}`;
      return url;
    }

    _open() {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      if (this.ws) {
        // A new connect() while a socket is still open or opening: drop the old one quietly.
        const old = this.ws;
        this.ws = null;
        old.onopen = null;
        old.onmessage = null;
        old.onclose = null;
        try {
          old.close();
        } catch (_) {
          // ignore
        }
        if (this.connected) this._closedQuietly();
      }
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (_) {
        this._closed(null, false);
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        if (this.ws !== ws) return;
        opened = true;
        this.connected = true;
        this.everConnected = true;
        this.backoff = BACKOFF_MIN_MS;
        this.hooks.status();
        for (const sub of this.subs) this._subscribeOne(sub);
        this.hooks.open();
      };
      ws.onmessage = (ev) => {
        if (this.ws !== ws) return;
        this._receive(ev.data);
      };
      ws.onclose = (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this._closed(ev, opened);
      };
      ws.onerror = () => {
        // A close event always follows; nothing to do here.
      };
    }

    _closedQuietly() {
      this.connected = false;
      for (const p of this.pending.values()) {
        clearTimeout(p.timer);
        p.reject(new Error('the connection to the node was lost'));
      }
      this.pending.clear();
      this.subIds.clear();
      this.early.clear();
      for (const sub of this.subs) {
        sub.id = null;
        sub.gen += 1;
      }
    }

    _closed(ev, opened) {
      this._closedQuietly();
      if (!this.stopped && this.hooks.refused(opened, ev)) this.stopped = true;
      this.hooks.status();
      this.hooks.closed();
      if (this.stopped) return;
      const delay = this.backoff;
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
      this.retryTimer = setTimeout(() => this._open(), delay);
    }

    _send(obj) {
      const text = JSON.stringify(obj);
      this.ws.send(text);
      this.bytesOut += encoder.encode(text).length;
      this.hooks.wire();
    }

    _receive(data) {
      let text;
      if (typeof data === 'string') {
        text = data;
        this.bytesIn += encoder.encode(data).length;
      } else {
        this.bytesIn += data.byteLength;
        text = decoder.decode(data);
      }
      this.hooks.wire();
      let msg;
      try {
        msg = JSON.parse(text);
      } catch (_) {
        return;
      }
      if (Array.isArray(msg)) for (const m of msg) this._dispatch(m);
      else this._dispatch(msg);
    }

    _dispatch(m) {
      if (!m || typeof m !== 'object') return;
      if (m.id !== undefined && m.id !== null && ('result' in m || 'error' in m)) {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error) p.reject(new RpcError(m.error));
        else p.resolve(m.result);
        return;
      }
      if (typeof m.method === 'string' && m.params && typeof m.params === 'object'
          && 'subscription' in m.params) {
        const key = String(m.params.subscription);
        const sub = this.subIds.get(key);
        if (sub) {
          this._deliver(sub, m.params.result);
        } else {
          // A notification can overtake the answer to its subscribe call; keep it briefly.
          if (!this.early.has(key)) {
            if (this.early.size >= 32) return;
            this.early.set(key, []);
          }
          const list = this.early.get(key);
          if (list.length < 2000) list.push(m.params.result);
        }
      }
    }

    _deliver(sub, result) {
      try {
        sub.onResult(result);
      } catch (e) {
        console.error(`${sub.notification} handler failed`, e);
      }
    }

    /** Calls `method`; resolves with the result or rejects with an RpcError (or an Error when
     * the connection fails or the node does not answer within 30 s). */
    call(method, params) {
      return new Promise((resolve, reject) => {
        if (!this.ws || !this.connected) {
          reject(new Error('not connected to the node'));
          return;
        }
        const id = this.nextId;
        this.nextId += 1;
        const timer = setTimeout(() => {
          if (this.pending.delete(id)) reject(new Error('no answer within 30 s'));
        }, CALL_TIMEOUT_MS);
        this.pending.set(id, { resolve, reject, timer });
        try {
          this._send({ jsonrpc: '2.0', id, method, params: params === undefined ? {} : params });
        } catch (e) {
          clearTimeout(timer);
          this.pending.delete(id);
          reject(e);
        }
      });
    }

    /** Keeps a subscription for the life of the page, re-subscribing on every connection.
     * `onSubscribed(err)` runs after each subscribe call settles (to load a snapshot). */
    subscribe(spec) {
      const sub = { ...spec, id: null, gen: 0, closed: false };
      this.subs.push(sub);
      if (this.connected) this._subscribeOne(sub);
      return sub;
    }

    _subscribeOne(sub) {
      sub.gen += 1;
      const gen = sub.gen;
      this.call(sub.method, sub.params || {}).then(
        (id) => {
          if (sub.gen !== gen) return;
          if (sub.closed) {
            this.call(sub.unsubscribe, [id]).catch(() => {});
            return;
          }
          sub.id = id;
          const key = String(id);
          this.subIds.set(key, sub);
          const early = this.early.get(key);
          this.early.delete(key);
          if (sub.onSubscribed) sub.onSubscribed(null);
          if (early) for (const r of early) this._deliver(sub, r);
        },
        (err) => {
          if (sub.gen !== gen) return;
          console.warn(`${sub.method} failed: ${errorText(err)}`);
          if (sub.onSubscribed) sub.onSubscribed(err);
        },
      );
    }

    unsubscribe(sub) {
      sub.closed = true;
      this.subs = this.subs.filter((s) => s !== sub);
      if (sub.id !== null) {
        this.subIds.delete(String(sub.id));
        if (this.connected) this.call(sub.unsubscribe, [sub.id]).catch(() => {});
        sub.id = null;
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Authentication

  const TOKEN_KEY = 'shoal-dashboard-token';
  const authMeta = document.querySelector('meta[name="shoal-auth"]');
  const authRequired = !!authMeta && authMeta.getAttribute('content') === 'required';
  let tokenProven = false;
  let waitingForToken = false;

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(token) {
    try {
      if (token === null) sessionStorage.removeItem(TOKEN_KEY);
      else sessionStorage.setItem(TOKEN_KEY, token);
    } catch (_) {
      // Storage may be disabled; the token then lives only as long as this page.
    }
  }

  function showTokenForm(message) {
    waitingForToken = true;
    document.body.classList.add('needs-token');
    $('auth').hidden = false;
    setText($('token-error'), message || '');
    const input = $('token-input');
    input.value = '';
    $('token-submit').disabled = false;
    updateStatus();
    input.focus();
  }

  function hideTokenForm() {
    waitingForToken = false;
    document.body.classList.remove('needs-token');
    $('auth').hidden = true;
    setText($('token-error'), '');
  }

  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const token = $('token-input').value;
    setText($('token-error'), '');
    storeToken(token);
    tokenProven = false;
    $('token-submit').disabled = true;
    waitingForToken = false;
    updateStatus();
    rpc.connect(token);
  });

  // ---------------------------------------------------------------------------------------
  // Status and wire counters

  function updateStatus() {
    const el = $('status');
    el.setAttribute('data-connected', rpc.connected ? 'true' : 'false');
    let text;
    if (rpc.connected) text = 'connected';
    else if (waitingForToken) text = 'not connected';
    else if (rpc.everConnected) text = 'reconnecting…';
    else text = 'connecting…';
    setText(el, text);
  }

  function updateWire() {
    const el = $('wire');
    el.setAttribute('data-bytes-in', String(rpc.bytesIn));
    el.setAttribute('data-bytes-out', String(rpc.bytesOut));
    el.textContent = `received ${fmtBytes(rpc.bytesIn)}, sent ${fmtBytes(rpc.bytesOut)} over the socket`;
  }

  const rpc = new Rpc({
    status: updateStatus,
    wire: updateWire,
    open() {
      if (authRequired) {
        tokenProven = true;
        hideTokenForm();
      }
      loadInfo();
      pollVisible();
    },
    closed() {
      inflight.clear();
    },
    refused(opened) {
      // With a token that has not worked yet, a socket that never opened means the upgrade
      // was refused: the token is wrong. Once a token has worked, failures are outages and
      // the client keeps reconnecting.
      if (!authRequired || tokenProven || opened) return false;
      storeToken(null);
      showTokenForm('The node refused the token');
      return true;
    },
  });

  // ---------------------------------------------------------------------------------------
  // Views and hash routing

  const VIEWS = ['node', 'members', 'routing', 'records', 'traffic', 'actions'];
  let currentView = 'node';

  let shownView = null;

  function route() {
    const name = location.hash.replace(/^#/, '');
    currentView = VIEWS.includes(name) ? name : 'node';
    if (shownView !== currentView) {
      // Some view names are also element ids (the members, routing and records tables), so a
      // plain fragment navigation would scroll to them: a view always opens at its top.
      shownView = currentView;
      window.scrollTo(0, 0);
    }
    for (const v of VIEWS) {
      $(`view-${v}`).hidden = v !== currentView;
      const tab = $(`tab-${v}`);
      if (v === currentView) tab.setAttribute('aria-current', 'page');
      else tab.removeAttribute('aria-current');
    }
    if (currentView === 'members') renderMembers();
    if (currentView === 'traffic') {
      renderCharts();
      renderMethods();
    }
    tick();
    pollVisible();
  }

  /** After a fragment navigation the browser starts keyboard navigation at the element named
   * by the fragment (a table, for some views); start it at the view's heading instead. */
  function resetFocusStart() {
    const heading = $(`view-${currentView}`).querySelector('h2');
    if (!heading || document.body.classList.contains('needs-token')) return;
    heading.setAttribute('tabindex', '-1');
    heading.focus({ preventScroll: true });
    heading.blur();
  }

  /** Runs once the browser has applied a fragment (it scrolls and moves the focus start in a
   * frame after the navigation): the view opens at its top, keyboard navigation at its heading. */
  function settleFragment() {
    requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(() => {
      const active = document.activeElement;
      if (active && active !== document.body && !active.matches('nav a')) return;
      window.scrollTo(0, 0);
      if (!active || active === document.body) resetFocusStart();
    }, 0)));
  }

  function routeFromHistory() {
    route();
    settleFragment();
  }

  window.addEventListener('hashchange', routeFromHistory);
  window.addEventListener('popstate', routeFromHistory);
  for (const v of VIEWS) {
    $(`tab-${v}`).addEventListener('click', (e) => {
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      if (location.hash !== `#${v}`) history.pushState(null, '', `#${v}`);
      route();
    });
  }
  window.addEventListener('load', () => {
    if (VIEWS.includes(location.hash.replace(/^#/, ''))) settleFragment();
  }, { once: true });

  // Polling: only the visible view's data, every 5 s; one call of each kind at a time.
  const inflight = new Set();

  function once(name, fn) {
    if (inflight.has(name) || !rpc.connected) return;
    inflight.add(name);
    Promise.resolve()
      .then(fn)
      .catch((e) => console.warn(`${name}: ${errorText(e)}`))
      .finally(() => inflight.delete(name));
  }

  function pollVisible() {
    if (!rpc.connected) return;
    switch (currentView) {
      case 'node': loadInfo(); break;
      case 'routing': loadRouting(); break;
      case 'records': loadRecords(); break;
      case 'traffic': loadPeers(); break;
      default: break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Node view

  let info = null;
  let infoAt = 0;
  let selfId = null;

  function loadInfo() {
    once('node_info', async () => {
      try {
        const result = await rpc.call('node_info', {});
        setText($('node-error'), '');
        renderInfo(result);
      } catch (e) {
        if (rpc.connected) setText($('node-error'), errorText(e));
      }
    });
  }

  function fillList(ul, items) {
    const list = Array.isArray(items) ? items.map(String) : [];
    const sig = JSON.stringify(list);
    if (ul.dataset.sig === sig) return;
    ul.dataset.sig = sig;
    if (list.length === 0) {
      ul.replaceChildren(h('li', { className: 'muted', text: 'none' }));
    } else {
      ul.replaceChildren(...list.map((a) => h('li', {}, [h('code', { className: 'wrap', text: a })])));
    }
  }

  /** Renders any JSON value as nested definition lists (text only). */
  function renderValue(v, depth) {
    if (v === null || v === undefined) return h('span', { className: 'muted', text: '—' });
    if (typeof v === 'boolean') return document.createTextNode(yesNo(v));
    if (typeof v === 'number') {
      return h('span', { className: 'num', text: Number.isInteger(v) ? fmtInt(v) : fmtNum(v) });
    }
    if (typeof v === 'string') return document.createTextNode(v);
    if (depth > 4) return h('code', { className: 'wrap', text: JSON.stringify(v) });
    if (Array.isArray(v)) {
      if (v.length === 0) return h('span', { className: 'muted', text: 'none' });
      return h('ul', { className: 'plain' }, v.map((x) => h('li', {}, [renderValue(x, depth + 1)])));
    }
    const entries = Object.entries(v);
    if (entries.length === 0) return h('span', { className: 'muted', text: 'none' });
    return h('dl', { className: 'kvlist' }, entries.map(([k, x]) => h('div', {}, [
      h('dt', { text: k.replace(/_/g, ' ') }),
      h('dd', {}, [renderValue(x, depth + 1)]),
    ])));
  }

  function fillKv(container, value) {
    const sig = JSON.stringify(value ?? null);
    if (container.dataset.sig === sig) return;
    container.dataset.sig = sig;
    container.replaceChildren(renderValue(value, 0));
  }

  function renderInfo(r) {
    if (!r || typeof r !== 'object') return;
    info = r;
    infoAt = nowSecs();
    const newSelf = typeof r.peer_id === 'string' ? r.peer_id : null;
    if (newSelf !== selfId) {
      selfId = newSelf;
      if (selfId && members.map.has(selfId)) members.map.delete(selfId);
      recountMembers();
      scheduleMembersRender(0);
    }
    const net = r.network != null ? String(r.network) : '—';
    setText($('header-network'), net);
    setText($('header-peer'), selfId ? shortId(selfId) : '—');
    $('header-peer').title = selfId || '';
    document.title = `Shoal · ${net} · ${selfId ? shortId(selfId) : ''}`;

    setText($('info-peer-id'), selfId || '—');
    setText($('info-network'), net);
    setText($('info-transport'), r.transport != null ? String(r.transport) : '—');
    const onion = r.onion_address;
    $('info-onion-row').hidden = !onion;
    setText($('info-onion'), onion ? String(onion) : '—');
    setText($('info-version'), r.version != null ? String(r.version) : '—');
    setText($('info-reachability'), r.reachability != null ? String(r.reachability) : '—');
    setText($('info-data-dir'), r.data_dir != null ? String(r.data_dir) : '—');
    fillList($('info-listen'), r.listen_addrs);
    fillList($('info-external'), r.external_addrs);
    const m = r.members || {};
    setText($('info-members'),
      `${fmtInt(m.alive)} alive · ${fmtInt(m.suspect)} suspect · ${fmtInt(m.dead)} dead · ${fmtInt(m.left)} left`);
    setText($('info-routing-peers'), fmtInt(r.routing_peers));
    setText($('info-connections'), fmtInt(r.connections));
    setText($('info-records'), fmtInt(r.records));
    setText($('info-notices'), fmtInt(r.notices));
    fillKv($('info-routing'), r.routing);
    fillKv($('info-identity'), r.identity_checks);
    fillKv($('info-join'), r.join);
    tickUptime();
    if (currentView === 'members') renderSelfRow();
  }

  function tickUptime() {
    if (!info || !isNum(info.uptime_secs)) return;
    setText($('info-uptime'), fmtUptime(info.uptime_secs + (nowSecs() - infoAt)));
  }

  // ---------------------------------------------------------------------------------------
  // Membership view

  const PAGE_SIZE = 200;
  const STATES = ['alive', 'suspect', 'dead', 'left'];
  const members = {
    map: new Map(),
    counts: { alive: 0, suspect: 0, dead: 0, left: 0 },
    loading: false,
    loaded: false,
    buffer: [],
    page: 0,
    filter: '',
    state: '',
    rows: new Map(),
    renderTimer: null,
    dirty: true,
  };
  const flashTimers = new WeakMap();

  function normalizeMember(m) {
    return {
      peer: String(m.peer),
      state: String(m.state ?? ''),
      incarnation: m.incarnation,
      addrs: Array.isArray(m.addrs) ? m.addrs.map(String) : [],
      verified: m.verified,
      changed_at: isNum(m.changed_at) ? m.changed_at : null,
      flashUntil: 0,
      // The states this page saw the member in, oldest first (the row's data-trail).
      trail: [String(m.state ?? '')],
    };
  }

  /** Adds `state` to the member's trail if it differs from the last, keeping the newest few. */
  function extendTrail(m, state) {
    if (m.trail[m.trail.length - 1] !== state) m.trail.push(state);
    if (m.trail.length > 8) m.trail.splice(0, m.trail.length - 8);
  }

  function recountMembers() {
    const c = { alive: 0, suspect: 0, dead: 0, left: 0 };
    for (const m of members.map.values()) if (m.state in c) c[m.state] += 1;
    members.counts = c;
    renderSummary();
  }

  function countDelta(state, d) {
    if (state in members.counts) members.counts[state] += d;
  }

  function renderSummary() {
    const c = members.counts;
    const el = $('members-summary');
    const alive = c.alive + 1; // this node
    el.setAttribute('data-alive', String(alive));
    el.setAttribute('data-suspect', String(c.suspect));
    el.setAttribute('data-dead', String(c.dead));
    el.setAttribute('data-left', String(c.left));
    setText(el, `${fmtInt(alive)} alive · ${fmtInt(c.suspect)} suspect · ${fmtInt(c.dead)} dead · ${fmtInt(c.left)} left`);
  }

  function loadMembers() {
    members.loading = true;
    members.buffer = [];
    rpc.call('swim_members', {}).then(
      (list) => {
        const map = new Map();
        if (Array.isArray(list)) {
          for (const raw of list) {
            if (!raw || raw.peer == null) continue;
            const m = normalizeMember(raw);
            if (m.peer === selfId) continue;
            const old = members.map.get(m.peer);
            if (old) {
              m.flashUntil = old.flashUntil;
              const state = m.state;
              m.trail = old.trail.slice();
              extendTrail(m, state);
            }
            map.set(m.peer, m);
          }
        }
        members.map = map;
        members.loading = false;
        members.loaded = true;
        const buffered = members.buffer;
        members.buffer = [];
        recountMembers();
        for (const n of buffered) applyChange(n, true);
        setText($('members-error'), '');
        scheduleMembersRender(0);
      },
      (e) => {
        members.loading = false;
        const buffered = members.buffer;
        members.buffer = [];
        for (const n of buffered) applyChange(n, false);
        if (rpc.connected) setText($('members-error'), errorText(e));
      },
    );
  }

  function onSwimChange(n) {
    // The node dropped changes this page was too slow to take: read the whole list again.
    if (n && isNum(n.lagged)) {
      if (!members.loading) loadMembers();
      return;
    }
    if (!n || n.peer == null) return;
    if (members.loading) {
      if (members.buffer.length < 10000) members.buffer.push(n);
      return;
    }
    applyChange(n, false);
  }

  function memberMatches(m) {
    if (members.state && m.state !== members.state) return false;
    if (members.filter && !m.peer.toLowerCase().includes(members.filter)) return false;
    return true;
  }

  function applyChange(n, replay) {
    const peer = String(n.peer);
    if (peer === selfId) return;
    const at = isNum(n.at) ? n.at : nowSecs();
    let m = members.map.get(peer);
    const isNew = !m;
    if (m && replay && m.changed_at !== null && at < m.changed_at) return; // older than snapshot
    if (!m) {
      m = normalizeMember({ peer, state: n.state, incarnation: n.incarnation, addrs: [] });
      members.map.set(peer, m);
      countDelta(m.state, 1);
    } else if (m.state !== n.state) {
      countDelta(m.state, -1);
      countDelta(String(n.state), 1);
    }
    const wasShown = memberMatches(m);
    m.state = String(n.state ?? m.state);
    extendTrail(m, m.state);
    if (n.incarnation !== undefined) m.incarnation = n.incarnation;
    if (Array.isArray(n.addrs)) m.addrs = n.addrs.map(String);
    if (typeof n.verified === 'boolean') m.verified = n.verified;
    m.changed_at = at;
    m.flashUntil = Date.now() + 2000;
    renderSummary();

    const row = members.rows.get(peer);
    if (row && currentView === 'members' && !members.dirty) {
      fillMemberRow(row, m, false);
      flash(row, 2000);
    }
    if (isNew || wasShown !== memberMatches(m)) {
      // The row set or order changes; re-render the page shortly (batched).
      scheduleMembersRender(300);
    }
  }

  function flash(tr, ms) {
    tr.classList.remove('flash');
    void tr.offsetWidth; // restart the animation
    tr.classList.add('flash');
    clearTimeout(flashTimers.get(tr));
    flashTimers.set(tr, setTimeout(() => tr.classList.remove('flash'), ms));
  }

  function scheduleMembersRender(delay) {
    members.dirty = true;
    if (currentView !== 'members') return;
    if (members.renderTimer !== null) {
      if (delay !== 0) return;
      clearTimeout(members.renderTimer);
    }
    members.renderTimer = setTimeout(() => {
      members.renderTimer = null;
      renderMembers();
    }, delay);
  }

  function stateBadge(state) {
    const s = String(state);
    const known = STATES.includes(s) ? s : 'other';
    return h('span', { className: `badge state-${known}`, text: s });
  }

  function addrCell(addrs) {
    if (!addrs || addrs.length === 0) return [h('span', { className: 'muted', text: 'none' })];
    return addrs.map((a) => h('code', { className: 'addr', text: a }));
  }

  function fillMemberRow(tr, m, isSelf) {
    tr.setAttribute('data-peer', m.peer);
    tr.setAttribute('data-state', m.state);
    tr.setAttribute('data-trail', (m.trail || [m.state]).join(' '));
    if (isSelf) tr.setAttribute('data-self', 'true');
    const peerCell = h('th', { scope: 'row' }, [peerCode(m.peer)]);
    if (isSelf) peerCell.append(' ', h('span', { className: 'tag', text: 'this node' }));
    const since = h('td', { className: 'num' });
    if (isNum(m.changed_at)) {
      since.setAttribute('data-since', String(m.changed_at));
      since.title = fmtTime(m.changed_at);
      since.textContent = ago(m.changed_at);
    } else {
      since.textContent = '—';
    }
    tr.replaceChildren(
      peerCell,
      h('td', {}, [stateBadge(m.state)]),
      // An incarnation is an identifier-like counter (often a timestamp): no digit grouping.
      h('td', { className: 'num', text: isNum(m.incarnation) ? String(m.incarnation) : '—' }),
      h('td', { className: 'addrs' }, addrCell(m.addrs)),
      h('td', { text: isSelf ? '—' : yesNo(m.verified) }),
      since,
    );
  }

  function selfMember() {
    if (!selfId) return null;
    const addrs = info
      ? [...(info.external_addrs || []), ...(info.listen_addrs || [])].map(String)
      : [];
    return {
      peer: selfId,
      state: 'alive',
      incarnation: null,
      addrs: Array.from(new Set(addrs)),
      verified: null,
      changed_at: null,
    };
  }

  function renderSelfRow() {
    const s = selfMember();
    if (!s) return;
    const row = members.rows.get(s.peer);
    if (row) fillMemberRow(row, s, true);
  }

  function renderMembers() {
    if (currentView !== 'members') {
      members.dirty = true;
      return;
    }
    if (members.renderTimer !== null) {
      clearTimeout(members.renderTimer);
      members.renderTimer = null;
    }
    members.dirty = false;
    const list = [];
    for (const m of members.map.values()) if (memberMatches(m)) list.push(m);
    list.sort((a, b) => (a.peer < b.peer ? -1 : a.peer > b.peer ? 1 : 0));
    const self = selfMember();
    if (self && memberMatches(self)) list.unshift(self);

    const total = list.length;
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    if (members.page >= pages) members.page = pages - 1;
    const start = members.page * PAGE_SIZE;
    const slice = list.slice(start, start + PAGE_SIZE);
    const now = Date.now();
    const rows = new Map();
    const frag = document.createDocumentFragment();
    for (const m of slice) {
      const tr = document.createElement('tr');
      const isSelf = self !== null && m === self;
      fillMemberRow(tr, m, isSelf);
      if (!isSelf && m.flashUntil > now) flash(tr, m.flashUntil - now);
      rows.set(m.peer, tr);
      frag.append(tr);
    }
    if (slice.length === 0) {
      frag.append(h('tr', { className: 'empty' }, [h('td', {
        colspan: '6',
        text: members.loaded || members.map.size ? 'No member matches the filter.' : 'Loading members…',
      })]));
    }
    members.rows = rows;
    $('members').tBodies[0].replaceChildren(frag);
    setText($('members-range'), total === 0
      ? '0 shown'
      : `${fmtInt(start + 1)}–${fmtInt(start + slice.length)} of ${fmtInt(total)}`);
    $('members-prev').disabled = members.page === 0;
    $('members-next').disabled = members.page >= pages - 1;
  }

  let filterTimer = null;
  $('members-filter').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      members.filter = $('members-filter').value.trim().toLowerCase();
      members.page = 0;
      renderMembers();
    }, 150);
  });
  $('members-state').addEventListener('change', () => {
    members.state = $('members-state').value;
    members.page = 0;
    renderMembers();
  });
  $('members-filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(filterTimer);
    members.filter = $('members-filter').value.trim().toLowerCase();
    members.page = 0;
    renderMembers();
  });
  $('members-prev').addEventListener('click', () => {
    if (members.page > 0) members.page -= 1;
    renderMembers();
  });
  $('members-next').addEventListener('click', () => {
    members.page += 1;
    renderMembers();
  });

  rpc.subscribe({
    method: 'swim_subscribe',
    params: {},
    notification: 'swim_change',
    unsubscribe: 'swim_unsubscribe',
    onResult: onSwimChange,
    onSubscribed: () => loadMembers(),
  });

  // ---------------------------------------------------------------------------------------
  // Routing table view

  const routingRows = new Map();
  const routingOpen = new Set();

  function loadRouting() {
    once('dht_routingTable', async () => {
      try {
        const rt = await rpc.call('dht_routingTable', {});
        setText($('routing-error'), '');
        renderRouting(rt);
      } catch (e) {
        if (rpc.connected) setText($('routing-error'), errorText(e));
      }
    });
  }

  function makeRoutingRow(distance) {
    const tr = h('tr', { 'data-distance': String(distance) });
    const fill = h('div', { className: 'bar-fill' });
    const bar = h('div', { className: 'bar', role: 'img' }, [fill]);
    const count = h('td', { className: 'num' });
    const summary = h('summary');
    const ul = h('ul', { className: 'idlist plain' });
    const details = h('details', {}, [summary, ul]);
    details.addEventListener('toggle', () => {
      if (details.open) routingOpen.add(distance);
      else routingOpen.delete(distance);
    });
    tr.append(
      h('th', { scope: 'row', className: 'num', text: String(distance) }),
      h('td', { className: 'barcell' }, [bar]),
      count,
      h('td', {}, [details]),
    );
    return { tr, fill, bar, count, summary, ul, details, sig: null };
  }

  function renderRouting(rt) {
    if (!rt || typeof rt !== 'object') return;
    const k = isNum(rt.k) && rt.k > 0 ? rt.k : 20;
    const buckets = Array.isArray(rt.buckets) ? rt.buckets : [];
    const tbody = $('routing').tBodies[0];
    setText($('routing-summary'),
      `k = ${fmtInt(k)} · ${fmtInt(rt.size)} peers in ${fmtInt(buckets.length)} non-empty buckets`);
    const seen = new Set();
    let prev = null;
    for (const b of buckets) {
      const d = Number(b.distance);
      const peers = Array.isArray(b.peers) ? b.peers.map(String) : [];
      seen.add(d);
      let row = routingRows.get(d);
      if (!row) {
        row = makeRoutingRow(d);
        routingRows.set(d, row);
      }
      const n = peers.length;
      row.tr.setAttribute('data-count', String(n));
      row.fill.style.width = `${Math.min(100, (n / k) * 100)}%`;
      if (n >= k) row.fill.classList.add('full');
      else row.fill.classList.remove('full');
      row.bar.setAttribute('aria-label', `${n} of ${k}`);
      row.bar.title = `${n} of ${k}`;
      setText(row.count, fmtInt(n));
      setText(row.summary, n === 1 ? '1 peer' : `${fmtInt(n)} peers`);
      const sig = peers.join('\n');
      if (row.sig !== sig) {
        row.sig = sig;
        row.ul.replaceChildren(...peers.map((p) => h('li', {}, [h('code', { className: 'wrap', text: p })])));
      }
      row.details.open = routingOpen.has(d);
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== row.tr) tbody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [d, row] of routingRows) {
      if (!seen.has(d)) {
        row.tr.remove();
        routingRows.delete(d);
      }
    }
    let empty = tbody.querySelector('tr.empty');
    if (buckets.length === 0) {
      if (!empty) {
        empty = h('tr', { className: 'empty' }, [h('td', { colspan: '4', text: 'The routing table is empty.' })]);
        tbody.append(empty);
      }
    } else if (empty) {
      empty.remove();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Records view

  const records = {
    prefix: '',
    after: null,
    stack: [],
    next: null,
    seq: 0,
  };

  function loadRecords() {
    once('dht_records', fetchRecords);
  }

  async function fetchRecords() {
    records.seq += 1;
    const seq = records.seq;
    const params = { limit: 50 };
    if (records.prefix !== '') {
      params.prefix = records.prefix;
      params.key_encoding = 'utf8';
    }
    if (records.after !== null) params.after = records.after;
    try {
      const r = await rpc.call('dht_records', params);
      if (seq !== records.seq) return;
      setText($('records-error'), '');
      renderRecords(r);
    } catch (e) {
      if (seq !== records.seq) return;
      if (rpc.connected) setText($('records-error'), errorText(e));
    }
  }

  /** Loads now, even if a periodic refresh is in flight (its answer is then ignored). */
  function reloadRecords() {
    inflight.delete('dht_records');
    loadRecords();
  }

  function renderRecords(r) {
    if (!r || typeof r !== 'object') return;
    const total = isNum(r.total) ? r.total : 0;
    const totalEl = $('records-total');
    totalEl.setAttribute('data-total', String(total));
    setText(totalEl, `${fmtInt(total)} ${total === 1 ? 'record' : 'records'} held`);
    records.next = typeof r.next === 'string' && r.next !== '' ? r.next : null;
    const list = Array.isArray(r.records) ? r.records : [];
    const frag = document.createDocumentFragment();
    for (const rec of list) {
      const key = String(rec.key ?? '');
      const keyCell = h('th', { scope: 'row', className: 'key' }, [h('code', { className: 'wrap', text: key })]);
      if (rec.key_encoding && rec.key_encoding !== 'utf8') {
        keyCell.append(' ', h('span', { className: 'tag', text: String(rec.key_encoding) }));
      }
      const exp = h('td', { className: 'num' });
      if (isNum(rec.expires_at)) {
        exp.setAttribute('data-expires', String(rec.expires_at));
        exp.title = fmtTime(rec.expires_at);
      }
      exp.textContent = until(rec.expires_at);
      frag.append(h('tr', { 'data-key': key }, [
        keyCell,
        h('td', {}, [peerCode(rec.publisher)]),
        h('td', { className: 'num', text: String(rec.seq) }),
        h('td', { className: 'num', text: fmtBytes(rec.size) }),
        exp,
      ]));
    }
    if (list.length === 0) {
      frag.append(h('tr', { className: 'empty' }, [h('td', {
        colspan: '5',
        text: records.prefix ? 'No record key starts with that prefix.' : 'No records on this page.',
      })]));
    }
    $('records').tBodies[0].replaceChildren(frag);
    const page = records.stack.length + 1;
    setText($('records-page-info'),
      `page ${page}${records.prefix ? ` · keys starting with “${records.prefix}”` : ''}`);
    $('records-next').disabled = records.next === null;
    $('records-first').disabled = records.after === null;
    $('records-prev').disabled = records.stack.length === 0;
  }

  $('records-form').addEventListener('submit', (e) => {
    e.preventDefault();
    records.prefix = $('records-search').value;
    records.after = null;
    records.stack = [];
    reloadRecords();
  });
  $('records-next').addEventListener('click', () => {
    if (records.next === null) return;
    records.stack.push(records.after);
    records.after = records.next;
    reloadRecords();
  });
  $('records-prev').addEventListener('click', () => {
    if (records.stack.length === 0) return;
    records.after = records.stack.pop();
    reloadRecords();
  });
  $('records-first').addEventListener('click', () => {
    records.after = null;
    records.stack = [];
    reloadRecords();
  });

  // Lockstep notices feed
  const MAX_NOTICES = 100;

  function onNotice(n) {
    // {lagged: n}: notices this page was too slow for; the feed shows what comes next.
    if (!n || typeof n !== 'object' || isNum(n.lagged)) return;
    const list = $('notices');
    const key = String(n.key ?? '');
    const at = isNum(n.created_at) ? n.created_at : nowSecs();
    const time = h('time', { 'data-at': String(at), datetime: isoTime(at), title: fmtTime(at), text: ago(at) });
    const keyEl = h('code', { className: 'key wrap', text: key });
    const parts = [keyEl];
    if (n.key_encoding && n.key_encoding !== 'utf8') parts.push(' ', h('span', { className: 'tag', text: String(n.key_encoding) }));
    parts.push(
      h('span', { className: 'num', text: ` seq ${String(n.seq)}` }),
      h('span', {}, [' by ', peerCode(n.publisher)]),
    );
    if (n.feed != null) {
      parts.push(h('span', { className: 'muted' }, [` feed ${String(n.feed)}`, n.feed_seq != null ? ` #${fmtInt(n.feed_seq)}` : '']));
    }
    parts.push(' ', time);
    const li = h('li', {
      'data-key': key,
      'data-publisher': n.publisher != null ? String(n.publisher) : null,
      'data-seq': n.seq != null ? String(n.seq) : null,
    }, parts);
    list.prepend(li);
    flash(li, 2000);
    while (list.children.length > MAX_NOTICES) list.lastElementChild.remove();
    $('notices-empty').hidden = true;
  }

  rpc.subscribe({
    method: 'lockstep_subscribe',
    params: {},
    notification: 'lockstep_notice',
    unsubscribe: 'lockstep_unsubscribe',
    onResult: onNotice,
  });

  // ---------------------------------------------------------------------------------------
  // Traffic view: charts from node_stats, live samples from node_subscribeStats

  const MAX_SAMPLES = 300;
  const stats = {
    interval: 2,
    samples: [],
    loading: false,
    buffer: [],
  };

  function rpcEntries(s) {
    return s && s.rpc && typeof s.rpc === 'object' ? Object.entries(s.rpc) : [];
  }

  function sumRpc(s, field) {
    let t = 0;
    for (const [, v] of rpcEntries(s)) if (v && isNum(v[field])) t += v[field];
    return t;
  }

  /** The slowest method's latency in a sample (methods with calls only), or null. */
  function maxRpc(s, field) {
    let best = null;
    for (const [, v] of rpcEntries(s)) {
      if (!v || !isNum(v[field]) || (isNum(v.calls) && v.calls === 0)) continue;
      if (best === null || v[field] > best) best = v[field];
    }
    return best;
  }

  function slowestMethod(s) {
    let best = null;
    let name = null;
    for (const [k, v] of rpcEntries(s)) {
      if (!v || !isNum(v.p99_ms) || (isNum(v.calls) && v.calls === 0)) continue;
      if (best === null || v.p99_ms > best) {
        best = v.p99_ms;
        name = k;
      }
    }
    return name;
  }

  const perSec = (field) => (s, iv) => (isNum(s[field]) ? s[field] / iv : null);
  const fmtRate = (v) => (isNum(v) ? `${fmtNum(v)}/s` : '—');
  const fmtByteRate = (v) => (isNum(v) ? `${fmtBytes(v)}/s` : '—');

  const CHARTS = [
    {
      id: 'rpc',
      title: 'RPC calls per second (all methods)',
      fmt: fmtRate,
      series: [{ label: 'calls', get: (s, iv) => sumRpc(s, 'calls') / iv }],
    },
    {
      id: 'latency',
      title: 'RPC latency (slowest method per sample)',
      fmt: fmtMs,
      minMax: 1,
      series: [
        { label: 'p50', get: (s) => maxRpc(s, 'p50_ms') },
        { label: 'p99', get: (s) => maxRpc(s, 'p99_ms') },
      ],
    },
    {
      id: 'swim',
      title: 'SWIM probes and refutations per second',
      fmt: fmtRate,
      series: [
        { label: 'probes', get: perSec('probes') },
        { label: 'failed probes', get: perSec('failed_probes') },
        { label: 'refutations', get: perSec('refutations') },
      ],
    },
    {
      id: 'puts',
      title: 'Puts stored and refused per second',
      fmt: fmtRate,
      series: [
        { label: 'stored', get: perSec('puts_stored') },
        { label: 'refused', get: perSec('puts_refused') },
      ],
    },
    {
      id: 'bytes',
      title: 'Bytes in and out per second',
      fmt: fmtByteRate,
      series: [
        { label: 'in', get: perSec('bytes_in') },
        { label: 'out', get: perSec('bytes_out') },
      ],
    },
  ];

  const VB_W = 300;
  const VB_H = 100;

  function buildCharts() {
    const container = $('charts');
    for (const c of CHARTS) {
      const titleId = `chart-${c.id}-title`;
      const legend = h('span', { className: 'legend' });
      c.vals = [];
      c.groups = [];
      c.series.forEach((s, i) => {
        const val = h('span', { className: 'val num', text: '—' });
        c.vals.push(val);
        legend.append(h('span', { className: `key s${i}` }, [
          h('span', { className: 'swatch', 'aria-hidden': 'true' }), `${s.label} `, val,
        ]));
      });
      c.note = h('span', { className: 'chart-note muted' });
      const plot = svg('svg', {
        viewBox: `0 0 ${VB_W} ${VB_H}`,
        preserveAspectRatio: 'none',
        role: 'img',
        'aria-labelledby': titleId,
        focusable: 'false',
      });
      for (const y of [0.5, 25, 50, 75, 99.5]) {
        plot.append(svg('line', {
          x1: 0, x2: VB_W, y1: y, y2: y, class: y > 99 ? 'axis' : 'grid', 'vector-effect': 'non-scaling-stroke',
        }));
      }
      c.series.forEach((s, i) => {
        const g = svg('g', { class: `series s${i}` });
        c.groups.push(g);
        plot.append(g);
      });
      c.ymax = h('span', { className: 'ymax num', text: '' });
      c.span = h('span', { className: 'xspan', text: '' });
      container.append(h('figure', { className: 'chart', id: `chart-${c.id}` }, [
        h('figcaption', {}, [
          h('span', { className: 'chart-title', id: titleId, text: c.title }),
          legend,
          c.note,
        ]),
        h('div', { className: 'plot' }, [plot, c.ymax, h('span', { className: 'ymin num', text: '0' }), c.span]),
      ]));
    }
  }

  function niceCeil(v) {
    if (!isNum(v) || v <= 0) return 1;
    const e = 10 ** Math.floor(Math.log10(v));
    const f = v / e;
    const n = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return n * e;
  }

  let chartsQueued = false;
  function scheduleCharts() {
    if (currentView !== 'traffic' || chartsQueued) return;
    chartsQueued = true;
    requestAnimationFrame(() => {
      chartsQueued = false;
      renderCharts();
      renderMethods();
    });
  }

  function renderCharts() {
    if (currentView !== 'traffic') return;
    const samples = stats.samples;
    const iv = stats.interval > 0 ? stats.interval : 2;
    const spanSecs = MAX_SAMPLES * iv;
    setText($('traffic-note'), samples.length
      ? `One sample every ${fmtNum(iv)} s · ${fmtInt(samples.length)} samples · last at ${new Date(samples[samples.length - 1].t * 1000).toLocaleTimeString()}`
      : 'Waiting for samples…');
    const tEnd = samples.length ? samples[samples.length - 1].t : 0;
    const t0 = tEnd - spanSecs;
    for (const c of CHARTS) {
      const values = c.series.map((s) => samples.map((x) => {
        const v = s.get(x, iv);
        return isNum(v) ? v : null;
      }));
      let max = 0;
      for (const vs of values) for (const v of vs) if (v !== null && v > max) max = v;
      const top = niceCeil(Math.max(max, c.minMax || 0));
      setText(c.ymax, c.fmt(top));
      setText(c.span, samples.length ? `last ${fmtDuration(Math.min(spanSecs, tEnd - samples[0].t))}` : '');
      values.forEach((vs, i) => {
        const lines = [];
        let pts = [];
        let prevT = null;
        const flush = () => {
          if (pts.length === 1) pts.push(`${(parseFloat(pts[0]) + 0.6).toFixed(2)},${pts[0].split(',')[1]}`);
          if (pts.length > 1) {
            lines.push(svg('polyline', { points: pts.join(' '), 'vector-effect': 'non-scaling-stroke' }));
          }
          pts = [];
        };
        for (let j = 0; j < samples.length; j += 1) {
          const t = samples[j].t;
          const v = vs[j];
          if (v === null || (prevT !== null && t - prevT > iv * 2.5)) flush();
          prevT = t;
          if (v === null) continue;
          const x = ((t - t0) / spanSecs) * VB_W;
          const y = VB_H - 1 - (Math.min(v, top) / top) * (VB_H - 2);
          pts.push(`${x.toFixed(2)},${y.toFixed(2)}`);
        }
        flush();
        c.groups[i].replaceChildren(...lines);
        const last = vs.length ? vs[vs.length - 1] : null;
        setText(c.vals[i], c.fmt(last));
      });
      if (c.id === 'latency') {
        const name = samples.length ? slowestMethod(samples[samples.length - 1]) : null;
        setText(c.note, name ? `slowest: ${name}` : '');
      }
    }
  }

  function renderMethods() {
    if (currentView !== 'traffic') return;
    const last = stats.samples[stats.samples.length - 1];
    const iv = stats.interval > 0 ? stats.interval : 2;
    const entries = rpcEntries(last).filter(([, v]) => v && typeof v === 'object');
    entries.sort((a, b) => ((b[1].calls || 0) - (a[1].calls || 0)) || (a[0] < b[0] ? -1 : 1));
    const rows = entries.map(([name, v]) => {
      const idle = isNum(v.calls) && v.calls === 0;
      return h('tr', { 'data-method': name }, [
        h('th', { scope: 'row' }, [h('code', { text: name })]),
        h('td', { className: 'num', text: fmtNum(isNum(v.calls) ? v.calls / iv : null) }),
        h('td', { className: 'num', text: fmtNum(isNum(v.errors) ? v.errors / iv : null) }),
        h('td', { className: 'num', text: idle ? '—' : fmtMs(v.p50_ms) }),
        h('td', { className: 'num', text: idle ? '—' : fmtMs(v.p99_ms) }),
      ]);
    });
    if (rows.length === 0) {
      rows.push(h('tr', { className: 'empty' }, [h('td', { colspan: '5', text: 'No RPC calls in the last sample.' })]));
    }
    $('methods').tBodies[0].replaceChildren(...rows);
  }

  function addSample(s) {
    if (!s || !isNum(s.t)) return;
    const arr = stats.samples;
    if (arr.length && s.t <= arr[arr.length - 1].t) return;
    arr.push(s);
    if (arr.length > MAX_SAMPLES) arr.splice(0, arr.length - MAX_SAMPLES);
  }

  function onStatsSample(s) {
    if (stats.loading) {
      if (stats.buffer.length < MAX_SAMPLES) stats.buffer.push(s);
      return;
    }
    addSample(s);
    scheduleCharts();
  }

  function loadStats() {
    stats.loading = true;
    stats.buffer = [];
    rpc.call('node_stats', {}).then(
      (r) => {
        if (r && isNum(r.interval_secs) && r.interval_secs > 0) stats.interval = r.interval_secs;
        const history = r && Array.isArray(r.samples) ? r.samples.filter((s) => s && isNum(s.t)) : [];
        stats.samples = [];
        for (const s of history) addSample(s);
        for (const s of stats.buffer) addSample(s);
        stats.buffer = [];
        stats.loading = false;
        setText($('traffic-error'), '');
        scheduleCharts();
      },
      (e) => {
        for (const s of stats.buffer) addSample(s);
        stats.buffer = [];
        stats.loading = false;
        if (rpc.connected) setText($('traffic-error'), errorText(e));
        scheduleCharts();
      },
    );
  }

  rpc.subscribe({
    method: 'node_subscribeStats',
    params: {},
    notification: 'node_stats',
    unsubscribe: 'node_unsubscribeStats',
    onResult: onStatsSample,
    onSubscribed: () => loadStats(),
  });

  // Per-peer traffic table
  const MAX_PEER_ROWS = 100;
  const PROTOCOLS = ['dht', 'swim', 'broadcast'];

  function loadPeers() {
    once('node_peers', async () => {
      let peers;
      try {
        // The node sends the busiest only: a node with thousands of connections stays cheap.
        peers = await rpc.call('node_peers', { detail: true, limit: MAX_PEER_ROWS });
        setText($('peers-error'), '');
      } catch (e) {
        if (rpc.connected) setText($('peers-error'), errorText(e));
        return;
      }
      let trust = null;
      try {
        trust = await rpc.call('trust_peers', {});
      } catch (_) {
        trust = null; // banned then shows as unknown
      }
      renderPeers(Array.isArray(peers) ? peers : [], Array.isArray(trust) ? trust : null);
    });
  }

  function traffic(p, proto, dir) {
    const t = p && p.traffic && p.traffic[proto];
    return t && isNum(t[dir]) ? t[dir] : 0;
  }

  function renderPeers(peers, trust) {
    const trustMap = new Map();
    let banned = 0;
    if (trust) {
      for (const t of trust) {
        if (!t || t.peer == null) continue;
        trustMap.set(String(t.peer), t);
        if (t.banned === true) banned += 1;
      }
    }
    const rows = peers.filter((p) => p && p.peer != null).map((p) => {
      let total = 0;
      for (const proto of PROTOCOLS) total += traffic(p, proto, 'in') + traffic(p, proto, 'out');
      return { p, total };
    });
    rows.sort((a, b) => b.total - a.total || (String(a.p.peer) < String(b.p.peer) ? -1 : 1));
    const shown = rows.slice(0, MAX_PEER_ROWS);
    const frag = document.createDocumentFragment();
    for (const { p, total } of shown) {
      const id = String(p.peer);
      const t = trustMap.get(id);
      const standing = isNum(p.standing) ? p.standing : t && isNum(t.standing) ? t.standing : null;
      const bannedText = trust === null ? '—' : t ? yesNo(t.banned === true) : 'no';
      const cells = [
        h('th', { scope: 'row' }, [peerCode(id)]),
        h('td', { text: yesNo(p.routed) }),
        h('td', { className: 'num', text: fmtInt(standing) }),
        h('td', { className: t && t.banned === true ? 'bad' : null, text: bannedText }),
      ];
      for (const proto of PROTOCOLS) {
        cells.push(h('td', { className: 'num', text: fmtBytes(traffic(p, proto, 'in')) }));
        cells.push(h('td', { className: 'num', text: fmtBytes(traffic(p, proto, 'out')) }));
      }
      cells.push(h('td', { className: 'num', text: fmtBytes(total) }));
      frag.append(h('tr', { 'data-peer': id }, cells));
    }
    if (shown.length === 0) {
      frag.append(h('tr', { className: 'empty' }, [h('td', { colspan: '11', text: 'No connected peers.' })]));
    }
    $('peers').tBodies[0].replaceChildren(frag);
    const connected = info && isNum(info.connections) ? info.connections : null;
    let summary = `${fmtInt(rows.length)} connected ${rows.length === 1 ? 'peer' : 'peers'}`;
    if (rows.length >= MAX_PEER_ROWS) {
      summary = `the ${fmtInt(rows.length)} busiest peers`;
      if (connected !== null) summary += ` (${fmtInt(connected)} connections)`;
    }
    if (trust) summary += ` · ${fmtInt(banned)} banned in the trust table`;
    setText($('peers-summary'), summary);
  }

  // ---------------------------------------------------------------------------------------
  // Actions

  function bindAction(name, run) {
    const form = $(`${name}-form`);
    const button = $(`${name}-submit`);
    const result = $(`${name}-result`);
    const error = $(`${name}-error`);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      if (button.disabled) return;
      error.textContent = '';
      result.replaceChildren();
      button.disabled = true;
      form.setAttribute('aria-busy', 'true');
      try {
        await run(result);
      } catch (err) {
        error.textContent = errorText(err);
      } finally {
        button.disabled = false;
        form.removeAttribute('aria-busy');
      }
    });
  }

  /** The TTL as typed: a number when it reads as one, else the text itself so that the server
   * says what is wrong with it; omitted when empty. */
  function ttlParam(text) {
    const t = text.trim();
    if (t === '') return undefined;
    const n = Number(t);
    return Number.isFinite(n) ? n : t;
  }

  bindAction('put', async (out) => {
    const params = { key: $('put-key').value, value: $('put-value').value };
    const ttl = ttlParam($('put-ttl').value);
    if (ttl !== undefined) params.ttl = ttl;
    const r = await rpc.call('dht_put', params);
    const replicas = Array.isArray(r && r.receipts) ? r.receipts.length : 0;
    out.textContent = `stored seq ${r && r.seq != null ? r.seq : '—'} at ${replicas} replicas (path ${r && r.path != null ? r.path : '—'})`;
    reloadRecords();
  });

  bindAction('get', async (out) => {
    const r = await rpc.call('dht_get', { key: $('get-key').value });
    if (!r || typeof r !== 'object') {
      out.textContent = 'no answer';
      return;
    }
    const value = h('pre', { className: 'value', text: r.value != null ? String(r.value) : '' });
    const valueDd = h('dd', {}, [value]);
    if (r.encoding && r.encoding !== 'utf8') valueDd.append(h('span', { className: 'tag', text: String(r.encoding) }));
    const copies = r.copies && typeof r.copies === 'object'
      ? `${fmtInt(r.copies.valid)} valid, ${fmtInt(r.copies.invalid)} invalid`
      : '—';
    const expires = isNum(r.expires_at) ? `${fmtTime(r.expires_at)} (in ${until(r.expires_at)})` : '—';
    const row = (label, content) => h('div', {}, [h('dt', { text: label }), content]);
    out.append(h('dl', { className: 'kvlist result-list' }, [
      row('Value', valueDd),
      row('Publisher', h('dd', {}, [h('code', { className: 'wrap', text: String(r.publisher ?? '—') })])),
      row('Seq', h('dd', { className: 'num', text: String(r.seq) })),
      row('Expires', h('dd', { text: expires })),
      row('Copies', h('dd', { text: copies })),
      row('Path', h('dd', { text: `${r.path ?? '—'}${isNum(r.rpcs) ? ` (${fmtInt(r.rpcs)} RPCs)` : ''}` })),
      row('Lockstep', h('dd', { text: yesNo(r.lockstep) })),
    ]));
  });

  bindAction('announce', async (out) => {
    const r = await rpc.call('lockstep_announce', {
      key: $('announce-key').value,
      value: $('announce-value').value,
    });
    const hash = r && r.value_hash ? ` (value hash ${String(r.value_hash).slice(0, 16)}…)` : '';
    out.textContent = `announced seq ${r && r.seq != null ? r.seq : '—'}: accepted by ${fmtInt(r && r.accepted)}, refused by ${fmtInt(r && r.refused)}${hash}`;
    if (r && r.value_hash) out.title = String(r.value_hash);
  });

  // ---------------------------------------------------------------------------------------
  // Timers: one 1 s ticker for relative times and uptime, one 5 s poll for the visible view

  function tick() {
    switch (currentView) {
      case 'node':
        tickUptime();
        break;
      case 'members':
        for (const el of $('members').querySelectorAll('td[data-since]')) {
          setText(el, ago(Number(el.getAttribute('data-since'))));
        }
        break;
      case 'records':
        for (const el of $('records').querySelectorAll('td[data-expires]')) {
          setText(el, until(Number(el.getAttribute('data-expires'))));
        }
        for (const el of $('notices').querySelectorAll('time[data-at]')) {
          setText(el, ago(Number(el.getAttribute('data-at'))));
        }
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Start

  buildCharts();
  renderSummary();
  route();
  updateWire();
  setInterval(tick, 1000);
  setInterval(pollVisible, 5000);

  if (authRequired) {
    const token = readToken();
    if (token === null) {
      showTokenForm('');
    } else {
      updateStatus();
      rpc.connect(token);
    }
  } else {
    updateStatus();
    rpc.connect(null);
  }
})();
