/* declab report.js: the interactive part of report.html (inlined by the Rust side).
 *
 * Plain ES2017, no libraries, no network, no console output. Data is never put into
 * innerHTML: all DOM is built with createElement / createElementNS / textContent.
 *
 * Page contract (the skeleton the Rust side emits):
 *   section#report   rendered markdown; every <table> in it becomes sortable (click a th).
 *   section#viewer   gets the sample viewer appended (its <h2> and <noscript> are kept).
 *   script#declab-data  JSON: {experiment, models:[id], prompts:[{id,text}], strategies:[id],
 *     samples:[{model,prompt,strategy (indices), index, seed (string), status "ok"|"failed",
 *     error, stop, chat_prompt, pieces[], token_ids[], entropy[], varentropy[], temperature[],
 *     final_entropy[], kept[], logprob[], p_final[], branch|null, controller|null, solve|null}]}
 *   All per-step arrays are as long as pieces; pieces.join("") is the sample's exact text.
 *
 * Viewer DOM: div.controls (selects #sel-model #sel-prompt #sel-sa #sel-ia #sel-sb #sel-ib
 *   #sel-color, div.legend), div.panes > div.pane#pane-a, div.pane#pane-b. In each pane,
 *   #text-a / #text-b contains ONLY span.tok[data-i] (one per piece, empty pieces included),
 *   so its textContent equals pieces.join(""). Markers are CSS pseudo-elements only.
 * URL hash: #a=<model>/<prompt>/<strategy>/<index>&b=<strategy>/<index>|none&color=entropy|p|final
 *   (components encodeURIComponent'd; unknown parts fall back to defaults).
 */
(function () {
  'use strict';

  var SVGNS = 'http://www.w3.org/2000/svg';

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  function fmt(v, d) { return isNum(v) ? v.toFixed(d === undefined ? 3 : d) : '—'; }

  /* ------------------------------------------------------------------ sortable tables */

  var MISSING = /^(|—|–|-|n\/?a|nan|none|null)$/i;
  var NUMRE = /^([<>≤≥~≈]?)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)/;

  /* Numeric sort key of a cell's text, or null when it does not start with a number. */
  function numKey(text) {
    var s = text.trim().replace(/\u2212/g, '-').replace(/(\d),(?=\d{3}(?!\d))/g, '$1');
    var m = NUMRE.exec(s);
    if (!m) return null;
    var v = parseFloat(m[2]);
    if (!isFinite(v)) return null;
    var eps = Math.abs(v) * 1e-9 + 1e-12;
    if (m[1] === '<' || m[1] === '≤') v -= eps;
    if (m[1] === '>' || m[1] === '≥') v += eps;
    return v;
  }

  /* Sort the table's body rows by column col; dir = 1 ascending, -1 descending. */
  function sortTable(table, col, dir) {
    var tbody = table.tBodies[0];
    if (!tbody) return;
    var rows = Array.prototype.slice.call(tbody.rows);
    var items = rows.map(function (r, i) {
      var cell = r.cells[col];
      var text = cell ? cell.textContent.trim() : '';
      return { row: r, i: i, text: text, missing: MISSING.test(text), num: numKey(text) };
    });
    var numeric = items.some(function (it) { return !it.missing; }) &&
      items.every(function (it) { return it.missing || it.num !== null; });
    items.sort(function (a, b) {
      if (a.missing !== b.missing) return a.missing ? 1 : -1;
      var c = 0;
      if (!a.missing) {
        c = numeric ? a.num - b.num : a.text.localeCompare(b.text, undefined, { numeric: true });
      }
      return c !== 0 ? c * dir : a.i - b.i;
    });
    items.forEach(function (it) { tbody.appendChild(it.row); });
  }

  function initSortable(table) {
    var head = table.tHead ? table.tHead.rows[table.tHead.rows.length - 1] : null;
    if (!head || !table.tBodies[0]) return;
    Array.prototype.forEach.call(head.cells, function (th) {
      if (th.tagName !== 'TH') return;
      th.classList.add('sortable');
      th.tabIndex = 0;
      th.title = 'Sort by this column';
      var go = function () {
        var dir = th.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
        Array.prototype.forEach.call(head.cells, function (o) { o.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
        sortTable(table, th.cellIndex, dir);
      };
      th.addEventListener('click', go);
      th.addEventListener('keydown', function (ev) {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); go(); }
      });
    });
  }

  /* ------------------------------------------------------------------ colours */

  var STOPS = [[0, [255, 255, 255]], [0.3, [255, 243, 160]], [0.6, [255, 196, 96]],
    [0.8, [250, 140, 80]], [1, [236, 92, 78]]];
  function heat(t) {
    if (!isNum(t)) return '';
    t = Math.max(0, Math.min(1, t));
    for (var i = 1; i < STOPS.length; i++) {
      if (t <= STOPS[i][0]) {
        var a = STOPS[i - 1], b = STOPS[i], f = (t - a[0]) / (b[0] - a[0]);
        var c = a[1].map(function (x, j) { return Math.round(x + (b[1][j] - x) * f); });
        return 'rgb(' + c.join(',') + ')';
      }
    }
    return 'rgb(236,92,78)';
  }
  function gradientCss() {
    return 'linear-gradient(to right,' + STOPS.map(function (s) {
      return heat(s[0]) + ' ' + Math.round(s[0] * 100) + '%';
    }).join(',') + ')';
  }
  var BRANCH_COLOURS = { low: '#2b7bb9', mid: '#7a5cc2', high: '#d0432b' };
  function branchColour(b) { return BRANCH_COLOURS[b] || '#555'; }

  /* ------------------------------------------------------------------ viewer */

  function initViewer(D) {
    var root = document.getElementById('viewer');
    if (!root) return;
    var models = D.models || [], prompts = D.prompts || [], strategies = D.strategies || [];
    var samples = D.samples || [];
    if (!samples.length) { root.appendChild(el('p', 'empty', 'No samples in this run.')); return; }

    // Index: "m/p/s" -> {index: sample}; availability lists are derived from it.
    var byKey = {};
    samples.forEach(function (s) {
      var k = s.model + '/' + s.prompt + '/' + s.strategy;
      (byKey[k] = byKey[k] || {})[s.index] = s;
    });
    function has(prefix) {
      for (var k in byKey) if (k.indexOf(prefix) === 0) return true;
      return false;
    }
    function range(n) { var a = []; for (var i = 0; i < n; i++) a.push(i); return a; }
    function availModels() { return range(models.length).filter(function (m) { return has(m + '/'); }); }
    function availPrompts(m) { return range(prompts.length).filter(function (p) { return has(m + '/' + p + '/'); }); }
    function availStrats(m, p) { return range(strategies.length).filter(function (s) { return byKey[m + '/' + p + '/' + s]; }); }
    function availIdx(m, p, s) {
      var o = byKey[m + '/' + p + '/' + s];
      return o ? Object.keys(o).map(Number).sort(function (a, b) { return a - b; }) : [];
    }
    function getSample(m, p, s, i) { var o = byKey[m + '/' + p + '/' + s]; return o ? o[i] : undefined; }

    // Colour scale for entropy modes: 99th percentile of the model's entropies (cached).
    var scaleCache = {};
    function entropyScale(m) {
      if (scaleCache[m] !== undefined) return scaleCache[m];
      var v = [];
      samples.forEach(function (s) {
        if (s.model !== m) return;
        (s.entropy || []).forEach(function (x) { if (isNum(x)) v.push(x); });
        (s.final_entropy || []).forEach(function (x) { if (isNum(x)) v.push(x); });
      });
      v.sort(function (a, b) { return a - b; });
      var q = v.length ? v[Math.min(v.length - 1, Math.floor(0.99 * (v.length - 1) + 0.5))] : 1;
      return (scaleCache[m] = q > 0 ? q : 1);
    }

    // ---- state and URL hash
    var COLORS = [['entropy', 'model entropy'], ['p', 'p of chosen token'], ['final', 'final entropy']];
    var st = { m: -1, p: -1, sa: -1, ia: 0, sb: undefined, ib: 0, color: 'entropy' };

    function dec(x) { try { return decodeURIComponent(x); } catch (e) { return x; } }
    function parseHash() {
      var h = (location.hash || '').replace(/^#/, '');
      var out = {};
      if (h.indexOf('=') < 0) return out; // "#viewer", "#report": no selection
      h.split('&').forEach(function (kv) {
        var j = kv.indexOf('=');
        if (j > 0) out[kv.slice(0, j)] = kv.slice(j + 1).split('/').map(dec);
      });
      return out;
    }
    function toInt(x) { var n = parseInt(x, 10); return isNaN(n) ? -1 : n; }
    function applyHash() {
      var h = parseHash();
      var a = h.a || [];
      st.m = models.indexOf(a[0]);
      st.p = prompts.map(function (p) { return p.id; }).indexOf(a[1]);
      st.sa = strategies.indexOf(a[2]);
      st.ia = a.length > 3 ? toInt(a[3]) : 0;
      if (h.b && h.b[0] === 'none') { st.sb = -1; } else if (h.b) {
        var sb = strategies.indexOf(h.b[0]);
        st.sb = sb >= 0 ? sb : undefined;
        st.ib = h.b.length > 1 ? toInt(h.b[1]) : st.ia;
      } else { st.sb = undefined; }
      var c = h.color && h.color[0];
      st.color = (c === 'p' || c === 'final') ? c : 'entropy';
      normalize();
      return !!h.a;
    }
    function pick(v, list) { return list.indexOf(v) >= 0 ? v : (list.length ? list[0] : -1); }
    /* Make the state point at existing samples (st.sb undefined = "choose the default B"). */
    function normalize() {
      st.m = pick(st.m, availModels());
      st.p = pick(st.p, availPrompts(st.m));
      var ss = availStrats(st.m, st.p);
      st.sa = pick(st.sa, ss);
      st.ia = pick(st.ia, availIdx(st.m, st.p, st.sa));
      if (st.sb !== -1 && ss.indexOf(st.sb) < 0) {
        var others = ss.filter(function (s) { return s !== st.sa; });
        st.sb = others.length ? (ss[1] !== undefined && ss[1] !== st.sa ? ss[1] : others[0]) : -1;
        st.ib = st.ia;
      }
      if (st.sb !== -1) st.ib = pick(st.ib, availIdx(st.m, st.p, st.sb));
    }
    function writeHash() {
      var e = encodeURIComponent;
      var h = '#a=' + e(models[st.m]) + '/' + e(prompts[st.p].id) + '/' + e(strategies[st.sa]) + '/' + st.ia +
        '&b=' + (st.sb === -1 ? 'none' : e(strategies[st.sb]) + '/' + st.ib) + '&color=' + st.color;
      try { history.replaceState(null, '', h); } catch (err) { /* file:// may refuse; ignore */ }
    }

    // ---- controls
    var controls = el('div', 'controls');
    var selects = {};
    function addSelect(id, label, group) {
      var lab = el('label', 'ctl');
      lab.appendChild(el('span', 'ctl-label', label));
      var s = el('select');
      s.id = id;
      lab.appendChild(s);
      group.appendChild(lab);
      selects[id] = s;
      return s;
    }
    function group(title) {
      var g = el('fieldset', 'ctl-group');
      g.appendChild(el('legend', null, title));
      controls.appendChild(g);
      return g;
    }
    var g1 = group('Sample'), g2 = group('Pane A'), g3 = group('Pane B'), g4 = group('Colour');
    addSelect('sel-model', 'model', g1);
    addSelect('sel-prompt', 'prompt', g1);
    addSelect('sel-sa', 'strategy', g2);
    addSelect('sel-ia', 'sample', g2);
    addSelect('sel-sb', 'strategy', g3);
    addSelect('sel-ib', 'sample', g3);
    addSelect('sel-color', 'mode', g4);
    var legend = el('div', 'legend');
    g4.appendChild(legend);
    root.appendChild(controls);

    var panes = el('div', 'panes');
    var paneA = el('div', 'pane'); paneA.id = 'pane-a';
    var paneB = el('div', 'pane'); paneB.id = 'pane-b';
    panes.appendChild(paneA); panes.appendChild(paneB);
    root.appendChild(panes);

    var tip = el('div', 'tip');
    tip.hidden = true;
    document.body.appendChild(tip);

    function fill(sel, opts, value) {
      while (sel.firstChild) sel.removeChild(sel.firstChild);
      opts.forEach(function (o) {
        var op = el('option', null, o[1]);
        op.value = String(o[0]);
        sel.appendChild(op);
      });
      sel.value = String(value);
    }
    function syncControls() {
      fill(selects['sel-model'], availModels().map(function (m) { return [m, models[m]]; }), st.m);
      fill(selects['sel-prompt'], availPrompts(st.m).map(function (p) { return [p, prompts[p].id]; }), st.p);
      var ss = availStrats(st.m, st.p).map(function (s) { return [s, strategies[s]]; });
      fill(selects['sel-sa'], ss, st.sa);
      fill(selects['sel-ia'], availIdx(st.m, st.p, st.sa).map(function (i) { return [i, '#' + i]; }), st.ia);
      fill(selects['sel-sb'], [[-1, '(none)']].concat(ss), st.sb);
      fill(selects['sel-ib'], st.sb === -1 ? [] : availIdx(st.m, st.p, st.sb).map(function (i) { return [i, '#' + i]; }), st.ib);
      selects['sel-ib'].disabled = st.sb === -1;
      fill(selects['sel-color'], COLORS, st.color);
    }
    function onChange(field, isInt) {
      selects[field[0]].addEventListener('change', function (ev) {
        var v = ev.target.value;
        st[field[1]] = isInt ? toInt(v) : v;
        if (field[1] === 'sb' && st.sb !== -1) st.ib = st.ia;
        normalize(); syncControls(); render(); writeHash();
      });
    }
    [['sel-model', 'm'], ['sel-prompt', 'p'], ['sel-sa', 'sa'], ['sel-ia', 'ia'], ['sel-sb', 'sb'],
      ['sel-ib', 'ib']].forEach(function (f) { onChange(f, true); });
    onChange(['sel-color', 'color'], false);

    // ---- legend
    function renderLegend() {
      while (legend.firstChild) legend.removeChild(legend.firstChild);
      var max = st.color === 'p' ? 1 : entropyScale(st.m);
      legend.appendChild(el('span', 'lg-min', st.color === 'p' ? 'p = 1' : '0'));
      var bar = el('span', 'lg-bar');
      bar.style.background = gradientCss();
      legend.appendChild(bar);
      legend.appendChild(el('span', 'lg-max', st.color === 'p' ? 'p = 0' : max.toFixed(2) + ' nats'));
      legend.appendChild(el('span', 'lg-note', st.color === 'p'
        ? 'low p of the chosen token = hot'
        : 'max = 99th percentile of ' + models[st.m] + '\u2019s entropies; above it clamps'));
    }

    // ---- per-token colour value in [0,1]
    function heatValue(s, i, scale) {
      if (st.color === 'p') { var lp = (s.logprob || [])[i]; return isNum(lp) ? 1 - Math.exp(lp) : null; }
      var v = ((st.color === 'final' ? s.final_entropy : s.entropy) || [])[i];
      return isNum(v) ? v / scale : null;
    }

    // ---- chart
    var CW = 600, CH = 110, PL = 30, PR = 30, PT = 16, PB = 14;
    function chart(s, scale) {
      var n = (s.pieces || []).length;
      var svg = svgEl('svg', { viewBox: '0 0 ' + CW + ' ' + CH, class: 'chart', role: 'img' });
      var pw = CW - PL - PR, ph = CH - PT - PB;
      var ent = s.entropy || [], fin = s.final_entropy || [], tmp = s.temperature || [];
      var ymax = scale;
      ent.concat(fin).forEach(function (v) { if (isNum(v) && v > ymax) ymax = v; });
      var tmax = 1;
      tmp.forEach(function (v) { if (isNum(v) && v > tmax) tmax = v; });
      function x(i) { return PL + (n > 1 ? i * pw / (n - 1) : pw / 2); }
      function y(v, m) { return PT + ph - (v / m) * ph; }
      svg.appendChild(svgEl('rect', { x: PL, y: PT, width: pw, height: ph, class: 'plot-bg' }));
      [[ymax, 'start', PL - 3, 'end'], [tmax, 'end', CW - PR + 3, 'start']].forEach(function (ax, k) {
        [0, ax[0]].forEach(function (v, j) {
          var t = svgEl('text', { x: ax[2], y: j ? PT + 4 : PT + ph, 'text-anchor': ax[3], class: 'ax' + (k ? ' ax-t' : '') });
          t.textContent = v.toFixed(1);
          svg.appendChild(t);
        });
      });
      // Branch change ticks along the bottom.
      var br = s.branch;
      if (br) br.forEach(function (b, i) {
        if (i > 0 && b === br[i - 1]) return;
        svg.appendChild(svgEl('line', { x1: x(i), x2: x(i), y1: PT, y2: PT + ph, stroke: branchColour(b), class: 'br-tick' }));
      });
      function line(arr, m, cls) {
        var pts = [], segs = [];
        arr.forEach(function (v, i) {
          if (isNum(v)) pts.push(x(i).toFixed(1) + ',' + y(Math.min(v, m), m).toFixed(1));
          else if (pts.length) { segs.push(pts); pts = []; }
        });
        if (pts.length) segs.push(pts);
        segs.forEach(function (p) {
          if (p.length === 1) p.push(p[0]);
          svg.appendChild(svgEl('polyline', { points: p.join(' '), class: 'ln ' + cls }));
        });
      }
      line(tmp, tmax, 'ln-t');
      line(fin, ymax, 'ln-f');
      line(ent, ymax, 'ln-e');
      var lx = PL + 4;
      [['ln-e', 'model entropy (nats, left)'], ['ln-f', 'final entropy (left)'], ['ln-t', 'temperature (right)']]
        .forEach(function (l) {
          svg.appendChild(svgEl('line', { x1: lx, x2: lx + 14, y1: 7, y2: 7, class: 'ln ' + l[0] }));
          var t = svgEl('text', { x: lx + 18, y: 10, class: 'lg' });
          t.textContent = l[1];
          svg.appendChild(t);
          lx += 26 + l[1].length * 5.4;
        });
      if (br) {
        var t = svgEl('text', { x: lx, y: 10, class: 'lg' });
        t.textContent = '| branch change';
        svg.appendChild(t);
      }
      var cursor = svgEl('line', { x1: 0, x2: 0, y1: PT, y2: PT + ph, class: 'cursor', visibility: 'hidden' });
      svg.appendChild(cursor);
      return { svg: svg, cursor: cursor, x: x, n: n };
    }

    // ---- tooltip
    function tipRows(s, i) {
      var rows = [['step', i], ['token id', (s.token_ids || [])[i]], ['piece', JSON.stringify((s.pieces || [])[i])]];
      function add(label, arr, d) { if (arr && arr[i] !== undefined && arr[i] !== null) rows.push([label, isNum(arr[i]) ? fmt(arr[i], d) : String(arr[i])]); }
      add('entropy', s.entropy); add('varentropy', s.varentropy); add('temperature', s.temperature);
      add('final entropy', s.final_entropy); add('kept', s.kept, 0); add('log p', s.logprob);
      if (s.logprob && isNum(s.logprob[i])) rows.push(['p', fmt(Math.exp(s.logprob[i]), 4)]);
      add('p final', s.p_final); add('branch', s.branch); add('controller', s.controller); add('solve', s.solve);
      return rows;
    }
    function showTip(s, i, target) {
      while (tip.firstChild) tip.removeChild(tip.firstChild);
      var tb = el('table');
      tipRows(s, i).forEach(function (r) {
        var tr = el('tr');
        tr.appendChild(el('th', null, r[0]));
        tr.appendChild(el('td', null, r[1] === undefined ? '—' : r[1]));
        tb.appendChild(tr);
      });
      tip.appendChild(tb);
      tip.hidden = false;
      var rects = target.getClientRects();
      var r = rects.length ? rects[0] : target.getBoundingClientRect();
      var left = r.left + window.pageXOffset;
      var maxLeft = window.pageXOffset + document.documentElement.clientWidth - tip.offsetWidth - 8;
      tip.style.left = Math.max(4, Math.min(left, maxLeft)) + 'px';
      var top = r.bottom + window.pageYOffset + 6;
      if (r.bottom + tip.offsetHeight + 10 > window.innerHeight && r.top > tip.offsetHeight + 10) {
        top = r.top + window.pageYOffset - tip.offsetHeight - 6;
      }
      tip.style.top = top + 'px';
    }

    // ---- pane
    function renderPane(pane, letter, si, idx) {
      while (pane.firstChild) pane.removeChild(pane.firstChild);
      if (si === -1) { pane.hidden = true; return; }
      pane.hidden = false;
      var s = getSample(st.m, st.p, si, idx);
      if (!s) { pane.appendChild(el('p', 'empty', 'No such sample.')); return; }
      var n = (s.pieces || []).length;
      var head = el('div', 'pane-head');
      head.appendChild(el('span', 'pane-letter', letter.toUpperCase()));
      head.appendChild(el('strong', 'strategy', strategies[si]));
      var ents = (s.entropy || []).filter(isNum);
      var mean = ents.length ? ents.reduce(function (a, b) { return a + b; }, 0) / ents.length : null;
      [['sample', '#' + s.index], ['seed', s.seed], ['stop', s.stop], ['tokens', n],
        ['mean H', mean === null ? '—' : mean.toFixed(3)]].forEach(function (kv) {
        var sp = el('span', 'meta');
        sp.appendChild(el('span', 'k', kv[0] + ' '));
        sp.appendChild(el('span', 'v', kv[1] === null || kv[1] === undefined ? '—' : kv[1]));
        head.appendChild(sp);
      });
      if (s.status === 'failed') head.appendChild(el('span', 'badge failed', 'failed'));
      pane.appendChild(head);
      if (s.exact_pieces === false) {
        pane.appendChild(el('p', 'note', 'This record predates token boundaries in samples.jsonl: ' +
          'its text is shown on its last token. Re-run to see it token by token.'));
      }

      var scale = entropyScale(st.m);
      var ch = null;
      if (n > 0) { ch = chart(s, scale); pane.appendChild(ch.svg); }

      if (s.chat_prompt) {
        var det = el('details', 'chat');
        det.appendChild(el('summary', null, 'chat-templated prompt'));
        det.appendChild(el('pre', 'prompt', s.chat_prompt));
        pane.appendChild(det);
      }
      var flow = el('div', 'flow');
      if (!s.chat_prompt) flow.appendChild(el('span', 'prompt', prompts[st.p].text));
      var text = el('span', 'text');
      text.id = 'text-' + letter;
      flow.appendChild(text);
      pane.appendChild(flow);
      if (s.status === 'failed') {
        pane.appendChild(el('div', 'error', s.error || 'failed (no error text)'));
        return;
      }
      var spans = [];
      (s.pieces || []).forEach(function (raw, i) {
        var piece = raw === null || raw === undefined ? '' : String(raw);
        var sp = el('span', 'tok', piece);
        sp.setAttribute('data-i', String(i));
        var bg = heat(heatValue(s, i, scale));
        if (bg) sp.style.backgroundColor = bg;
        if (s.branch && s.branch[i] && (i === 0 || s.branch[i] !== s.branch[i - 1])) {
          sp.classList.add('branch-change');
          sp.setAttribute('data-branch', s.branch[i]);
          sp.style.setProperty('--br', branchColour(s.branch[i]));
        }
        if ((s.temperature || [])[i] === 0) sp.classList.add('greedy');
        if (piece.indexOf('\n') >= 0) sp.classList.add('nl');
        text.appendChild(sp);
        spans.push(sp);
      });
      var hl = null;
      function mark(i) {
        if (hl) hl.classList.remove('hl');
        hl = i === null ? null : spans[i];
        if (hl) hl.classList.add('hl');
        if (ch) {
          if (i === null) ch.cursor.setAttribute('visibility', 'hidden');
          else {
            ch.cursor.setAttribute('x1', ch.x(i)); ch.cursor.setAttribute('x2', ch.x(i));
            ch.cursor.setAttribute('visibility', 'visible');
          }
        }
      }
      text.addEventListener('mouseover', function (ev) {
        var t = ev.target;
        if (!t.classList || !t.classList.contains('tok')) return;
        var i = toInt(t.getAttribute('data-i'));
        mark(i); showTip(s, i, t);
      });
      text.addEventListener('mouseleave', function () { mark(null); tip.hidden = true; });
      if (ch && n > 0) {
        ch.svg.addEventListener('mousemove', function (ev) {
          var r = ch.svg.getBoundingClientRect();
          var fx = (ev.clientX - r.left) / r.width * CW;
          var i = n > 1 ? Math.round((fx - PL) / ((CW - PL - PR) / (n - 1))) : 0;
          i = Math.max(0, Math.min(n - 1, i));
          mark(i); showTip(s, i, spans[i]);
        });
        ch.svg.addEventListener('mouseleave', function () { mark(null); tip.hidden = true; });
      }
    }

    function render() {
      renderLegend();
      renderPane(paneA, 'a', st.sa, st.ia);
      renderPane(paneB, 'b', st.sb, st.ib);
      panes.classList.toggle('single', st.sb === -1);
    }

    applyHash();
    syncControls();
    render();
    window.addEventListener('hashchange', function () {
      if (parseHash().a) { applyHash(); syncControls(); render(); }
    });
  }

  /* ------------------------------------------------------------------ tabs */

  // The report and the viewer are two tabs of one page: #viewer or a selection (#a=...) shows
  // the viewer, anything else the report. Without script both sections show, one after the other.
  function showTab() {
    var h = location.hash || '';
    var tab = (h === '#viewer' || /^#a=|[#&]a=/.test(h)) ? 'viewer' : 'report';
    ['report', 'viewer'].forEach(function (id) {
      var sec = document.getElementById(id);
      if (sec) sec.hidden = id !== tab;
      var link = document.querySelector('header.top a[href="#' + id + '"]');
      if (link) link.classList.toggle('active', id === tab);
    });
  }

  /* ------------------------------------------------------------------ main */

  showTab();
  window.addEventListener('hashchange', showTab);

  try {
    var rep = document.getElementById('report');
    if (rep) Array.prototype.forEach.call(rep.querySelectorAll('table'), initSortable);
  } catch (e) { /* never break the viewer over a table */ }

  var data = null;
  try {
    var node = document.getElementById('declab-data');
    data = node ? JSON.parse(node.textContent) : null;
  } catch (e) { data = null; }
  var viewer = document.getElementById('viewer');
  if (viewer) {
    try {
      if (data && typeof data === 'object') initViewer(data);
      else viewer.appendChild(el('p', 'empty', 'No sample data in this report.'));
    } catch (e) {
      viewer.appendChild(el('p', 'error', 'The sample viewer failed: ' + e));
    }
  }
})();
