"use strict";
// The dupflow report viewer. Every piece of data reaches the page through textContent, setAttribute
// on attributes this script chooses, or data: image sources; nothing is parsed as HTML.
(function () {
  const D = JSON.parse(document.getElementById("dupflow-data").textContent);
  const THUMBS = JSON.parse(document.getElementById("dupflow-thumbs").textContent);
  const I = D.images, P = D.pairs;
  const N = I.uri.length, M = P.a.length;
  const SVG = "http://www.w3.org/2000/svg";
  const EXTRA = D.extra ? D.extra.values : {};
  const EXTRA_COLS = Object.keys(EXTRA);
  const NAMES = I.name.map((s) => String(s).toLowerCase());
  const $ = (id) => document.getElementById(id);

  // ---- small helpers ------------------------------------------------------------------------
  function el(tag, props, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, String(v));
    }
    for (const kid of kids) if (kid !== null && kid !== undefined && kid !== false) e.append(kid);
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  const fmtSim = (s) => (s === null || s === undefined || s < 0 ? "–" : Number(s).toFixed(3));
  const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en"));
  function human(n) {
    if (n === null || n === undefined) return "–";
    let v = Number(n);
    for (const unit of ["B", "KB", "MB", "GB"]) {
      if (v < 1024) return unit === "B" ? `${v} B` : `${v.toFixed(1)} ${unit}`;
      v /= 1024;
    }
    return `${v.toFixed(1)} TB`;
  }
  const fmtValue = (v) => (typeof v === "number" ? (Number.isInteger(v) ? fmtInt(v) : v.toFixed(4)) : v === null || v === undefined ? "–" : String(v));
  const dims = (i) => (I.w[i] ? `${I.w[i]}×${I.h[i]}` : "–");
  const safeLink = (u) => (typeof u === "string" && /^(file|https?):\/\//.test(u) ? u : null);

  // ---- pairs per image (CSR) ----------------------------------------------------------------
  const start = new Int32Array(N + 1);
  for (let k = 0; k < M; k++) { start[P.a[k] + 1]++; start[P.b[k] + 1]++; }
  for (let i = 0; i < N; i++) start[i + 1] += start[i];
  const adj = new Int32Array(2 * M);
  { const fill = start.slice(0, N);
    for (let k = 0; k < M; k++) { adj[fill[P.a[k]]++] = k; adj[fill[P.b[k]]++] = k; } }
  const other = (k, i) => (P.a[k] === i ? P.b[k] : P.a[k]);
  function pairBetween(i, j) {
    for (let x = start[i]; x < start[i + 1]; x++) if (other(adj[x], i) === j) return adj[x];
    return -1;
  }

  // ---- state --------------------------------------------------------------------------------
  // the slider starts at the loosest rule (or the least similar pair found, if lower): it can tighten the run, not loosen it
  let minSim = Math.min(1, ...D.rules.map((r) => r.min_similarity));
  for (let k = 0; k < M; k++) if (P.s[k] < minSim) minSim = P.s[k];
  const S = {
    view: "groups", t: Math.floor(minSim * 1000) / 1000, limit: 200, perRow: 6, desc: true, onlyDup: true,
    ds: -1, leak: false, method: -1, q: "", page: 0, gridKey: "sim",
    groups: [], groupOf: new Int32Array(N), best: new Float64Array(N), nearest: new Int32Array(N), active: [],
  };

  // ---- the threshold: pairs, groups and keepers at the slider's similarity ------------------
  function compute() {
    const t = S.t - 1e-9, parent = new Int32Array(N);
    for (let i = 0; i < N; i++) parent[i] = i;
    const find = (x) => { while (parent[x] !== x) { parent[x] = parent[parent[x]]; x = parent[x]; } return x; };
    S.best.fill(-1); S.nearest.fill(-1);
    const active = [];
    for (let k = 0; k < M; k++) {
      if (P.s[k] < t || (S.method >= 0 && P.m[k] !== S.method)) continue;
      active.push(k);
      const a = P.a[k], b = P.b[k], ra = find(a), rb = find(b);
      if (ra !== rb) parent[ra < rb ? rb : ra] = ra < rb ? ra : rb;
      if (P.s[k] > S.best[a]) { S.best[a] = P.s[k]; S.nearest[a] = b; }
      if (P.s[k] > S.best[b]) { S.best[b] = P.s[k]; S.nearest[b] = a; }
    }
    const byRoot = new Map();
    S.groupOf.fill(-1);
    for (let i = 0; i < N; i++) {
      if (S.best[i] < 0) continue;
      const r = find(i);
      if (!byRoot.has(r)) byRoot.set(r, []);
      byRoot.get(r).push(i);
    }
    const groups = [];
    for (const members of byRoot.values()) {
      members.sort((x, y) => I.rank[x] - I.rank[y]);
      const id = groups.length;
      for (const i of members) S.groupOf[i] = id;
      const sets = new Set(members.map((i) => I.ds[i]));
      groups.push({ id, members, keeper: members[0], top: 0, leak: sets.size > 1, datasets: sets, methods: new Set() });
    }
    for (const k of active) {
      const g = groups[S.groupOf[P.a[k]]];
      if (P.s[k] > g.top) g.top = P.s[k];
      g.methods.add(P.m[k]);
    }
    S.groups = groups; S.active = active;
  }

  const activePair = (k) => P.s[k] >= S.t - 1e-9 && (S.method < 0 || P.m[k] === S.method);
  function similarityToKeeper(g, i) {
    const k = pairBetween(g.keeper, i);
    return k >= 0 && activePair(k) ? k : -1;
  }
  const moves = (g, i) => i !== g.keeper && !D.reference.includes(D.datasets[I.ds[i]]);

  // ---- filters shared by every view ---------------------------------------------------------
  const nameMatches = (i) => !S.q || NAMES[i].includes(S.q);
  function groupItems(forceLeak) {
    const leak = S.leak || forceLeak;
    const items = S.groups.filter((g) => (!leak || g.leak) && (S.ds < 0 || g.datasets.has(S.ds))
      && (!S.q || g.members.some(nameMatches)));
    const groups = items.length;
    if (!S.onlyDup && !leak) {
      for (let i = 0; i < N; i++) {
        if (S.groupOf[i] < 0 && I.status[i] !== "error" && (S.ds < 0 || I.ds[i] === S.ds) && nameMatches(i)) {
          items.push({ id: -1, members: [i], keeper: i, top: 0, leak: false, single: true, datasets: new Set([I.ds[i]]), methods: new Set() });
        }
      }
    }
    const dir = S.desc ? -1 : 1;
    items.sort((x, y) => dir * (x.top - y.top) || x.members[0] - y.members[0]);
    return { items, groups };
  }
  function pairRows() {
    const rows = S.active.filter((k) => {
      const a = P.a[k], b = P.b[k];
      return (S.ds < 0 || I.ds[a] === S.ds || I.ds[b] === S.ds) && (!S.leak || I.ds[a] !== I.ds[b])
        && (!S.q || nameMatches(a) || nameMatches(b));
    });
    const dir = S.desc ? -1 : 1;
    return rows.sort((x, y) => dir * (P.s[x] - P.s[y]) || x - y);
  }

  // ---- paging -------------------------------------------------------------------------------
  function pages(sizes) {
    const starts = [0];
    let used = 0;
    sizes.forEach((n, idx) => {
      if (used > 0 && used + n > S.limit) { starts.push(idx); used = 0; }
      used += n;
    });
    return starts;
  }
  function pageSlice(list, sizes) {
    const starts = pages(sizes);
    S.page = Math.max(0, Math.min(S.page, starts.length - 1));
    const from = starts[S.page], to = S.page + 1 < starts.length ? starts[S.page + 1] : list.length;
    $("page-label").textContent = list.length ? `page ${S.page + 1} of ${starts.length} (${fmtInt(from + 1)}–${fmtInt(to)} of ${fmtInt(list.length)})` : "nothing to show";
    $("prev-page").disabled = S.page === 0;
    $("next-page").disabled = S.page + 1 >= starts.length;
    $("pager").hidden = starts.length < 2;  // nothing to page through: no pager
    return list.slice(from, to);
  }

  // ---- pieces -------------------------------------------------------------------------------
  function thumb(i, cls) {
    const t = I.thumb[i];
    if (t >= 0 && typeof THUMBS[t] === "string" && THUMBS[t].startsWith("data:image/")) {
      return el("img", { class: cls, src: THUMBS[t], alt: I.name[i], loading: "lazy", decoding: "async" });
    }
    const why = I.err[i] ? "unreadable" : D.thumb_failures[String(i)] ? "no thumbnail: " + D.thumb_failures[String(i)]
      : "no thumbnail (report limit)";
    return el("div", { class: cls === "mini" ? "nothumb mini" : "nothumb", title: why, text: cls === "mini" ? "–" : why });
  }
  const badge = (cls, text) => el("span", { class: "badge " + cls, text });
  function liveStatus(i) {
    if (I.status[i] === "error") return "error";
    return S.best[i] >= 0 ? "fail" : "pass";
  }
  function extraLines(i) {
    return EXTRA_COLS.map((c) => el("div", { class: "facts", text: `${c}: ${fmtValue(EXTRA[c][i])}` }));
  }
  function tile(g, i) {
    const keeper = !g.single && i === g.keeper;
    const k = keeper || g.single ? -1 : similarityToKeeper(g, i);
    const ref = D.reference.includes(D.datasets[I.ds[i]]);
    const role = g.single ? null : keeper ? badge("keep", "KEEP") : ref ? badge("pass", "REFERENCE") : badge("fail", "DUPLICATE");
    const simText = g.single ? "no duplicate at this threshold"
      : keeper ? `best match ${fmtSim(S.best[i])}` : k >= 0 ? `${fmtSim(P.s[k])} to keeper (${D.methods[P.m[k]]})`
        : `${fmtSim(S.best[i])} to ${I.name[S.nearest[i]]}`;
    const box = el("div", {
      class: "tile" + (keeper ? " keeper" : ""), tabindex: 0, "data-img": i, role: "button",
      on: {
        click: () => (keeper || g.single ? showImage(i) : showPairOf(g.keeper, i)),
        keydown: (ev) => { if (ev.key === "Enter") box.click(); },
      },
    }, thumb(i, "thumb"), el("div", { class: "name", title: I.uri[i], text: I.name[i] }), role,
    el("div", { class: "facts sim", text: simText }),
    el("div", { class: "facts", text: `${dims(i)} · ${human(I.size[i])} · ${D.datasets[I.ds[i]]}` }),
    ...extraLines(i));
    return box;
  }
  function groupCard(g) {
    const head = el("div", { class: "group-head" },
      el("strong", { text: g.single ? "Unique image" : `Group of ${g.members.length}` }),
      g.single ? null : el("span", { class: "facts", text: `top similarity ${fmtSim(g.top)}` }),
      el("span", { class: "facts", text: [...g.datasets].map((d) => D.datasets[d]).join(", ") }),
      g.leak ? badge("leak", "ACROSS DATASETS") : null,
      g.single ? null : el("span", { class: "facts", text: [...g.methods].map((m) => D.methods[m]).join(", ") }),
      g.single ? null : el("span", { class: "facts", text: `${g.members.filter((i) => moves(g, i)).length} to move` }));
    return el("section", { class: "group", "data-group": g.id, "data-top": g.top }, head,
      el("div", { class: "members" }, ...g.members.map((i) => tile(g, i))));
  }
  function table(headers, rows, onSort) {
    const head = el("tr", null, ...headers.map((h) => el("th", {
      class: h.num ? "num" : null, "data-key": h.key, title: onSort && h.key ? "sort by this column" : null,
      on: onSort && h.key ? { click: () => onSort(h.key) } : null,
    }, h.label)));
    return el("table", null, el("thead", null, head), el("tbody", null, ...rows));
  }
  const td = (text, cls) => el("td", { class: cls, text });

  // ---- views --------------------------------------------------------------------------------
  function renderGroups(forceLeak) {
    const { items, groups } = groupItems(forceLeak);
    setCount(groups, items.length);
    const shown = pageSlice(items, items.map((g) => g.members.length));
    const view = $("view");
    if (!items.length) view.append(el("p", { class: "muted", text: "No groups at this threshold with these filters." }));
    for (const g of shown) view.append(groupCard(g));
  }
  function pairRow(k, list, pos) {
    const a = P.a[k], b = P.b[k];
    return el("tr", { class: "clickable", "data-pair": k, on: { click: () => showPair(k, list, pos) } },
      el("td", null, thumb(a, "mini")), td(I.name[a], "path"), td(D.datasets[I.ds[a]]),
      el("td", null, thumb(b, "mini")), td(I.name[b], "path"), td(D.datasets[I.ds[b]]),
      td(fmtSim(P.s[k]), "num"), td(P.d[k] === null ? "–" : P.d[k], "num"), td(D.methods[P.m[k]]),
      td(D.rules[P.r[k]].label), td(P.o[k] === null ? "" : D.orientations[P.o[k]]));
  }
  function renderPairs() {
    const rows = pairRows();
    setCount(S.groups.length, rows.length);
    const shown = pageSlice(rows, rows.map(() => 2));
    const offset = rows.indexOf(shown[0]);
    $("view").append(table([{ label: "" }, { label: "image A" }, { label: "dataset" }, { label: "" }, { label: "image B" },
      { label: "dataset" }, { label: "similarity", num: true }, { label: "distance", num: true }, { label: "method" },
      { label: "rule" }, { label: "orientation" }], shown.map((k, n) => pairRow(k, rows, offset + n))));
  }
  const GRID = {
    name: (i) => NAMES[i], dataset: (i) => D.datasets[I.ds[i]], status: (i) => liveStatus(i), sim: (i) => S.best[i],
    uniq: (i) => (I.uniq[i] === null ? 2 : I.uniq[i]), size: (i) => I.size[i] || 0, pixels: (i) => (I.w[i] || 0) * (I.h[i] || 0),
    group: (i) => S.groupOf[i],
  };
  for (const c of EXTRA_COLS) GRID["x:" + c] = (i) => EXTRA[c][i];
  function renderImages() {
    const rows = [];
    for (let i = 0; i < N; i++) {
      if ((S.ds < 0 || I.ds[i] === S.ds) && nameMatches(i) && (!S.onlyDup || S.best[i] >= 0)
        && (!S.leak || (S.groupOf[i] >= 0 && S.groups[S.groupOf[i]].leak))) rows.push(i);
    }
    const key = GRID[S.gridKey] || GRID.sim, dir = S.desc ? -1 : 1;
    rows.sort((x, y) => {
      const a = key(x), b = key(y);
      if (a === b) return x - y;
      if (a === null || a === undefined) return 1;
      if (b === null || b === undefined) return -1;
      return dir * (a < b ? -1 : 1);
    });
    setCount(S.groups.length, rows.length);
    const shown = pageSlice(rows, rows.map(() => 1));
    const headers = [{ label: "" }, { label: "file", key: "name" }, { label: "dataset", key: "dataset" },
      { label: "status", key: "status" }, { label: "max similarity", key: "sim", num: true }, { label: "nearest" },
      { label: "uniqueness (run)", key: "uniq", num: true }, { label: "group", key: "group", num: true },
      { label: "size", key: "size", num: true }, { label: "pixels", key: "pixels", num: true },
      ...EXTRA_COLS.map((c) => ({ label: c, key: "x:" + c, num: typeof EXTRA[c].find((v) => v !== null) === "number" }))];
    const body = shown.map((i) => {
      const st = liveStatus(i);
      return el("tr", { class: "clickable", "data-img": i, on: { click: () => showImage(i) } },
        el("td", null, thumb(i, "mini")), td(I.name[i], "path"), td(D.datasets[I.ds[i]]), el("td", null, badge(st, st.toUpperCase())),
        td(fmtSim(S.best[i]), "num"), td(S.nearest[i] >= 0 ? I.name[S.nearest[i]] : "", "path"), td(fmtSim(I.uniq[i]), "num"),
        td(S.groupOf[i] >= 0 ? S.groupOf[i] : "", "num"), td(human(I.size[i]), "num"), td(dims(i), "num"),
        ...EXTRA_COLS.map((c) => td(fmtValue(EXTRA[c][i]), "num")));
    });
    $("view").append(el("p", { class: "muted", text: "Status and similarity follow the threshold slider: an image fails when it has a duplicate at or above it. Click a column to sort; the order button flips it." }),
      table(headers, body, (k) => { S.gridKey = k; S.page = 0; render(); }));
  }
  function renderCross() {
    const view = $("view");
    view.append(el("h2", { text: "Groups shared by datasets (train/val leakage, ingest vs corpus)" }));
    const rows = [];
    for (let d1 = 0; d1 < D.datasets.length; d1++) {
      for (let d2 = d1 + 1; d2 < D.datasets.length; d2++) {
        const shared = S.groups.filter((g) => g.datasets.has(d1) && g.datasets.has(d2));
        const count = (d) => shared.reduce((n, g) => n + g.members.filter((i) => I.ds[i] === d).length, 0);
        const run = D.summary.intersections[`${D.datasets[d1]} & ${D.datasets[d2]}`];
        rows.push(el("tr", null, td(`${D.datasets[d1]} & ${D.datasets[d2]}`), td(fmtInt(shared.length), "num"),
          td(`${D.datasets[d1]} ${fmtInt(count(d1))}, ${D.datasets[d2]} ${fmtInt(count(d2))}`),
          td(run ? fmtInt(run.shared_groups) : "–", "num")));
      }
    }
    view.append(rows.length ? table([{ label: "datasets" }, { label: "shared groups at this threshold", num: true },
      { label: "images on each side" }, { label: "shared groups (run)", num: true }], rows)
      : el("p", { class: "muted", text: "Only one dataset was matched." }));
    view.append(el("h2", { text: "Groups across datasets" }));
    renderGroups(true);
  }
  function renderErrors() {
    const rows = [];
    for (let i = 0; i < N; i++) if (I.status[i] === "error" && (S.ds < 0 || I.ds[i] === S.ds) && nameMatches(i)) rows.push(i);
    setCount(S.groups.length, rows.length);
    const shown = pageSlice(rows, rows.map(() => 1));
    const view = $("view");
    view.append(el("h2", { text: `${fmtInt(rows.length)} files could not be read` }),
      table([{ label: "file" }, { label: "dataset" }, { label: "error" }],
        shown.map((i) => el("tr", { "data-img": i }, td(I.uri[i], "path"), td(D.datasets[I.ds[i]]), td(I.err[i])))));
    const failed = Object.keys(D.thumb_failures);
    if (failed.length) {
      view.append(el("h2", { text: `${fmtInt(failed.length)} thumbnails could not be drawn` }),
        table([{ label: "file" }, { label: "why" }], failed.slice(0, 500).map((i) => el("tr", null, td(I.uri[+i], "path"), td(D.thumb_failures[i])))));
    }
  }
  function renderSummary() {
    const view = $("view"), s = D.summary, dup = duplication(S.groups), run = D.duplication;
    view.append(el("p", { class: "muted", text: `Rules ${s.settings.rules.join(" | ")} · keep ${s.settings.keep}` +
      (s.settings.reference && s.settings.reference.length ? ` · reference ${s.settings.reference.join(", ")}` : "") + ` · store ${s.settings.store}` }));
    view.append(el("p", { id: "duplication", class: "headline", "data-images": dup.images, "data-files": dup.files },
      el("b", { text: `${fmtInt(dup.images)} duplicated images appearing ${fmtInt(dup.files)} times` }),
      ` at similarity ≥ ${fmtSim(S.t)} (as the run grouped them: ${fmtInt(run.images)} appearing ${fmtInt(run.files)} times)`),
    el("p", { class: "muted", text: "A duplicated image is a picture that appears more than once: each duplicate group counts as one. " +
      "It appears as every file of its group, the one kept included, so the second number less the first is how many files are copies of another." }));
    const live = D.datasets.map((_, d) => {
      const gs = S.groups.filter((g) => g.datasets.has(d));
      let move = 0;
      for (const g of S.groups) for (const i of g.members) if (I.ds[i] === d && moves(g, i)) move++;
      return { groups: gs.length, move };
    });
    const rows = D.datasets.map((name, d) => {
      const x = s.datasets[name];
      return el("tr", null, td(name), td(x.reference ? "reference" : "matched"), td(fmtInt(x.images), "num"),
        td(fmtInt(x.images - x.encoded), "num"), td(fmtInt(x.duplicate_groups), "num"), td(fmtInt(x.to_move), "num"),
        td(human(x.bytes_to_move), "num"), td(fmtInt(live[d].groups), "num"), td(fmtInt(live[d].move), "num"));
    });
    view.append(table([{ label: "dataset" }, { label: "role" }, { label: "images", num: true }, { label: "unreadable", num: true },
      { label: "groups inside it (run)", num: true }, { label: "to move (run)", num: true }, { label: "bytes to move (run)", num: true },
      { label: "groups with its images at threshold", num: true }, { label: "to move at threshold", num: true }], rows));
    const plots = el("div", { class: "plots" });
    view.append(el("h2", { text: "Plots" }), plots);
    plots.append(plot("Group sizes at this threshold: how many groups have 2, 3, 4… images", groupSizePlot(dup.sizes),
      `${fmtInt(dup.images)} groups holding ${fmtInt(dup.files)} files`));
    D.methods.forEach((m, mi) => plots.append(plot(`Pair similarity, ${m}: ${fmtInt(P.m.filter((x) => x === mi).length)} pairs`,
      similarityHistogram(mi), "red dashed: the rule's threshold · blue: the slider · orange: pairs below the slider")));
    plots.append(plot("Uniqueness (1 − best similarity, as scored by the run)", uniquenessHistogram()));
    plots.append(plot("Duplicates per dataset at this threshold", perDataset(live), "blue: images in duplicate groups · orange: files to move"));
    if (D.projection) plots.append(plot(`2-D view (PCA of ${D.projection.source}; ${fmtInt(D.projection.x.length)} of ${fmtInt(D.projection.of)} images), coloured by group`, scatter()));
    setCount(S.groups.length, S.groups.length);
  }
  const plot = (title, svg, legend) => el("figure", { class: "plot" }, el("figcaption", { text: title }), svg,
    legend ? el("div", { class: "legend", text: legend }) : null);

  // ---- plots (inline SVG) -------------------------------------------------------------------
  function histogram(values, lo, hi, bins, marks, below) {
    const W = 420, H = 180, L = 40, B = 26, span = Math.max(hi - lo, 1e-9);
    const counts = new Array(bins).fill(0), under = new Array(bins).fill(0);
    for (const v of values) {
      const b = Math.min(bins - 1, Math.max(0, Math.floor((v - lo) / span * bins)));
      counts[b]++;
      if (below !== undefined && v < below - 1e-9) under[b]++;
    }
    const top = Math.max(1, ...counts), svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const x = (v) => L + (v - lo) / span * (W - L - 8), y = (c) => H - B - c / top * (H - B - 10);
    counts.forEach((c, b) => {
      if (!c) return;
      const x0 = L + b / bins * (W - L - 8), w = (W - L - 8) / bins - 1, bar = sv("g", { "data-bin": b, "data-count": c });
      bar.append(sv("title", {}, `${(lo + b / bins * span).toFixed(3)}–${(lo + (b + 1) / bins * span).toFixed(3)}: ${c}`));
      if (c - under[b] > 0) bar.append(sv("rect", { class: "bar", x: x0, y: y(c - under[b]), width: w, height: H - B - y(c - under[b]) }));
      if (under[b] > 0) bar.append(sv("rect", { class: "bar alt", x: x0, y: y(c), width: w, height: y(c - under[b]) - y(c) }));
      svg.append(bar);
    });
    svg.append(sv("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#999" }));
    svg.append(sv("text", { x: L, y: H - 8 }, lo.toFixed(2)), sv("text", { x: W - 36, y: H - 8 }, hi.toFixed(2)),
      sv("text", { x: 2, y: 14 }, fmtInt(top)), sv("text", { x: 2, y: H - B }, "0"));
    for (const mk of marks) {
      if (mk.v < lo - 1e-9 || mk.v > hi + 1e-9) continue;
      const line = sv("line", { class: mk.cls, x1: x(mk.v), y1: 6, x2: x(mk.v), y2: H - B });
      line.append(sv("title", {}, mk.label));
      svg.append(line);
    }
    return svg;
  }
  function similarityHistogram(mi) {
    const values = [];
    for (let k = 0; k < M; k++) if (P.m[k] === mi) values.push(P.s[k]);
    const rules = D.rules.filter((r) => r.method === D.methods[mi]);
    const lo = Math.min(...values, ...rules.map((r) => r.min_similarity), S.t, 0.99);
    const marks = rules.map((r) => ({ v: r.min_similarity, cls: "rule-line", label: `rule ${r.label}: ${fmtSim(r.min_similarity)}` }));
    marks.push({ v: S.t, cls: "now-line", label: `slider: ${fmtSim(S.t)}` });
    const fig = histogram(values, Math.floor(lo * 100) / 100, 1, 40, marks, S.t);
    fig.setAttribute("data-method", D.methods[mi]);
    return fig;
  }
  // the duplicated images (one per group) at the slider, the files they appear as, and [members, groups] per group size
  function duplication(groups) {
    const sizes = new Map();
    for (const g of groups) sizes.set(g.members.length, (sizes.get(g.members.length) || 0) + 1);
    return { images: groups.length, files: groups.reduce((n, g) => n + g.members.length, 0),
      sizes: [...sizes.entries()].sort((x, y) => x[0] - y[0]) };
  }
  function groupSizePlot(sizes) {
    const W = 420, H = 180, L = 40, B = 26, most = 24;  // past `most` bars, the largest sizes share one
    const bars = sizes.length <= most ? sizes.map(([n, c]) => [String(n), c])
      : [...sizes.slice(0, most - 1).map(([n, c]) => [String(n), c]),
        [`≥ ${sizes[most - 1][0]}`, sizes.slice(most - 1).reduce((t, x) => t + x[1], 0)]];
    const top = Math.max(1, ...bars.map((b) => b[1])), slot = Math.min(48, (W - L - 8) / Math.max(bars.length, 1));
    const y = (c) => H - B - c / top * (H - B - 14), every = Math.ceil(bars.length / 12);
    const svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", id: "group-sizes" });
    bars.forEach(([label, count], n) => {
      const x0 = L + n * slot + 2, bar = sv("g", { "data-size": label, "data-count": count });
      bar.append(sv("title", {}, `${fmtInt(count)} groups of ${label} images`),
        sv("rect", { class: "bar", x: x0, y: y(count), width: Math.max(slot - 4, 1), height: H - B - y(count) }));
      if (n % every === 0) bar.append(sv("text", { x: x0 + slot / 2 - 2, y: H - 8, "text-anchor": "middle" }, label));
      svg.append(bar);
    });
    svg.append(sv("line", { x1: L, y1: H - B, x2: W - 8, y2: H - B, stroke: "#999" }),
      sv("text", { x: 2, y: 14 }, fmtInt(top)), sv("text", { x: 2, y: H - B }, "0"),
      sv("text", { x: W - 8, y: H - 8, "text-anchor": "end" }, "images in the group"));
    if (!bars.length) svg.append(sv("text", { x: L + 8, y: H / 2 }, "no duplicate groups at this threshold"));
    return svg;
  }
  function uniquenessHistogram() {
    return histogram(I.uniq.filter((u) => u !== null), 0, 1, 20, []);
  }
  function perDataset(live) {
    const W = 420, H = 180, L = 40, B = 26, n = D.datasets.length, svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const inGroups = D.datasets.map((_, d) => S.groups.reduce((c, g) => c + g.members.filter((i) => I.ds[i] === d).length, 0));
    const top = Math.max(1, ...inGroups), slot = (W - L - 8) / Math.max(n, 1), y = (c) => H - B - c / top * (H - B - 14);
    D.datasets.forEach((name, d) => {
      const x0 = L + d * slot + 4, w = slot / 2 - 6;
      const a = sv("rect", { class: "bar", x: x0, y: y(inGroups[d]), width: w, height: H - B - y(inGroups[d]) });
      a.append(sv("title", {}, `${name}: ${inGroups[d]} images in duplicate groups`));
      const b = sv("rect", { class: "bar alt", x: x0 + w + 2, y: y(live[d].move), width: w, height: H - B - y(live[d].move) });
      b.append(sv("title", {}, `${name}: ${live[d].move} to move`));
      svg.append(a, b, sv("text", { x: x0, y: H - 8 }, name.length > 14 ? name.slice(0, 13) + "…" : name));
    });
    svg.append(sv("text", { x: 2, y: 14 }, fmtInt(top)));
    return svg;
  }
  function scatter() {
    const W = 420, H = 420, pad = 10, pr = D.projection, svg = sv("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
    const order = pr.img.map((_, n) => n).sort((a, b) => (S.groupOf[pr.img[a]] >= 0) - (S.groupOf[pr.img[b]] >= 0));
    for (const n of order) {
      const i = pr.img[n], g = S.groupOf[i];
      const c = sv("circle", {
        cx: pad + pr.x[n] * (W - 2 * pad), cy: pad + (1 - pr.y[n]) * (H - 2 * pad), r: g >= 0 ? 4 : 2.5,
        fill: g >= 0 ? `hsl(${(g * 137.508) % 360}, 70%, 42%)` : "#b8c0c8", "fill-opacity": g >= 0 ? 0.9 : 0.6, "data-img": i,
      });
      c.append(sv("title", {}, `${I.name[i]}${g >= 0 ? ` (group ${g})` : ""}`));
      c.addEventListener("click", () => showImage(i));
      svg.append(c);
    }
    return svg;
  }

  // ---- image and pair views (modal) ---------------------------------------------------------
  function factsTable(i) {
    const rows = [["file", I.uri[i]], ["dataset", D.datasets[I.ds[i]]], ["status at threshold", liveStatus(i)],
      ["dimensions", dims(i)], ["file size", human(I.size[i])], ["format", I.fmt[i] || "–"],
      ["uniqueness (run)", fmtSim(I.uniq[i])], ["group at threshold", S.groupOf[i] >= 0 ? S.groupOf[i] : "none"],
      ...EXTRA_COLS.map((c) => [c, fmtValue(EXTRA[c][i])])];
    if (I.err[i]) rows.push(["error", I.err[i]]);
    const t = el("table", null, el("tbody", null, ...rows.map(([k, v]) => el("tr", null, el("th", { text: k }), td(v, "path")))));
    const link = safeLink(I.link[i]);
    return el("div", null, t, link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer", text: "open the original" }) : null);
  }
  // the original at full size where the page links it (local files, presigned links), else the thumbnail
  function large(i) {
    const fallback = I.thumb[i] >= 0 ? thumb(i, "large") : thumb(i, "nothumb");
    const link = safeLink(I.link[i]);
    if (!link) return fallback;
    const img = el("img", { class: "large original", src: link, alt: I.name[i], decoding: "async" });
    img.addEventListener("error", () => img.replaceWith(fallback));
    return img;
  }
  function openModal(...kids) {
    const body = $("modal-body");
    body.replaceChildren(...kids);
    const dlg = $("modal");
    if (!dlg.open) dlg.showModal();
  }
  function showImage(i) {
    const ks = Array.from(adj.subarray(start[i], start[i + 1])).sort((x, y) => P.s[y] - P.s[x]);
    const rows = ks.map((k, n) => {
      const j = other(k, i);
      return el("tr", { class: "clickable", "data-pair": k, on: { click: () => showPair(k, ks, n) } },
        el("td", null, thumb(j, "mini")), td(I.name[j], "path"), td(D.datasets[I.ds[j]]), td(fmtSim(P.s[k]), "num"),
        td(D.methods[P.m[k]]), td(activePair(k) ? "at or above the threshold" : "below the threshold"));
    });
    openModal(el("h2", { text: I.name[i] }), el("div", { class: "side-by-side" }, large(i), factsTable(i)),
      el("h2", { text: `${ks.length} near duplicates found by the run` }),
      ks.length ? table([{ label: "" }, { label: "file" }, { label: "dataset" }, { label: "similarity", num: true }, { label: "method" }, { label: "" }], rows) : null);
  }
  function showPairOf(i, j) {
    const k = pairBetween(i, j);
    if (k >= 0) return showPair(k, [k], 0);
    openModal(el("h2", { text: "Same group, no direct pair: linked through other members" }),
      el("div", { class: "side-by-side" }, large(i), large(j), factsTable(i), factsTable(j)));
  }
  function showPair(k, list, pos) {
    const a = P.a[k], b = P.b[k];
    const nav = el("p", null,
      el("button", { type: "button", id: "pair-prev", disabled: pos <= 0 ? "" : null, on: { click: () => showPair(list[pos - 1], list, pos - 1) } }, "← previous pair"), " ",
      el("button", { type: "button", id: "pair-next", disabled: pos + 1 >= list.length ? "" : null, on: { click: () => showPair(list[pos + 1], list, pos + 1) } }, "next pair →"),
      ` pair ${pos + 1} of ${list.length}`);
    const view = P.o[k] === null ? null : D.orientations[P.o[k]];
    const o = view === null ? "" : view === "crop" ? " · one is a crop of the other" : ` · B is A ${view}`;
    openModal(el("h2", { id: "pair-title", text: `similarity ${fmtSim(P.s[k])} · ${D.methods[P.m[k]]}` + (P.d[k] === null ? "" : ` · ${P.d[k]} bits apart`) + ` · rule ${D.rules[P.r[k]].label}${o}` }),
      nav, el("div", { class: "side-by-side" }, large(a), large(b), factsTable(a), factsTable(b)));
    $("modal").dataset.pair = String(k);
    $("modal").pairNav = { list, pos };
  }

  // ---- rendering and controls ---------------------------------------------------------------
  // the status line counts what the tab shows: groups, pairs (the Pairs tab), images or unreadable files
  function setCount(groups, items) {
    const c = $("shown-count"), pairs = S.active.length;
    c.dataset.groups = String(groups); c.dataset.items = String(items); c.dataset.pairs = String(pairs);
    const live = `${fmtInt(groups)} groups, ${fmtInt(pairs)} pairs at similarity ≥ ${fmtSim(S.t)}`;
    c.textContent = {
      groups: () => `${live} · ${fmtInt(items)} shown`,
      cross: () => `${live} · ${fmtInt(items)} shown`,
      pairs: () => `${fmtInt(items)} pairs at similarity ≥ ${fmtSim(S.t)}` + (items < pairs ? ` (of ${fmtInt(pairs)} before the filters)` : ""),
      images: () => `${fmtInt(items)} images · ${live}`,
      errors: () => `${fmtInt(items)} unreadable files`,
      summary: () => live,
    }[S.view]();
  }
  const VIEWS = { summary: renderSummary, groups: () => renderGroups(false), pairs: renderPairs, images: renderImages, cross: renderCross, errors: renderErrors };
  // the controls that act on each tab (data-views in the page); the others are hidden there
  const useless = new Set();
  function showControls() {
    for (const c of document.querySelectorAll("#controls [data-views]")) {
      c.hidden = useless.has(c.id) || !c.dataset.views.split(" ").includes(S.view);
    }
  }
  function render() {
    $("view").replaceChildren();
    $("pager").hidden = true;
    showControls();
    for (const b of document.querySelectorAll("#tabs button")) b.setAttribute("aria-selected", String(b.dataset.view === S.view));
    VIEWS[S.view]();
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }
  let pending = 0;
  function schedule(recompute) {
    if (recompute) pending |= 2;
    if (pending & 1) return;
    pending |= 1;
    requestAnimationFrame(() => {
      if (pending & 2) compute();
      pending = 0;
      render();
    });
  }

  function setup() {
    $("title").textContent = D.meta.title;
    $("subtitle").textContent = `made ${D.meta.generated} by dupflow ${D.meta.version} · ${fmtInt(D.meta.thumbnails)} thumbnails embedded (${human(D.meta.thumbnail_bytes)}, ${D.meta.thumb_size} px)` +
      (D.meta.thumbnails_omitted > 0 ? ` · ${fmtInt(D.meta.thumbnails_omitted)} images without one (raise --thumbnails)` : "") +
      (D.extra ? ` · scores from ${D.extra.source}: ${fmtInt(D.extra.matched)} images matched` : "");
    const t = D.summary.totals, errs = Object.values(t.errors).reduce((a, b) => a + b, 0);
    const counts = [["images", t.images], ["encoded", t.encoded], ["unreadable", errs], ["pairs", t.pairs], ["groups", t.groups],
      ["groups across datasets", t.leakage_groups], ["fail the rules", t.failed], ["to move", t.to_move]];
    $("counts").replaceChildren(...counts.map(([k, v]) => el("span", { class: "count", "data-count": k }, el("b", { text: fmtInt(v) }), k)),
      el("span", { class: "count" }, el("b", { text: human(t.bytes_to_move) }), "to move"));
    if (D.datasets.length < 2) useless.add("dataset-control").add("leak-control");
    if (D.methods.length < 2) useless.add("method-control");
    for (const [id, list] of [["dataset", D.datasets], ["method", D.methods]]) {
      list.forEach((name, n) => $(id).append(el("option", { value: n, text: name })));
    }
    const th = $("threshold");
    th.min = String(Math.floor(minSim * 1000) / 1000);
    th.value = th.min;
    const out = (id, v) => { $(id + "-value").textContent = v; };
    out("threshold", fmtSim(S.t)); out("limit", S.limit); out("per-row", S.perRow);
    th.addEventListener("input", () => { S.t = Number(th.value); S.page = 0; out("threshold", fmtSim(S.t)); schedule(true); });
    $("limit").addEventListener("input", (e) => { S.limit = Number(e.target.value); S.page = 0; out("limit", S.limit); schedule(false); });
    $("per-row").addEventListener("input", (e) => {
      S.perRow = Number(e.target.value); out("per-row", S.perRow);
      document.documentElement.style.setProperty("--per-row", String(S.perRow));
    });
    $("sort-order").addEventListener("click", (e) => {
      S.desc = !S.desc; S.page = 0;
      e.target.dataset.order = S.desc ? "desc" : "asc";
      e.target.textContent = S.desc ? "Descending order" : "Ascending order";
      schedule(false);
    });
    $("only-dup").addEventListener("change", (e) => { S.onlyDup = e.target.checked; S.page = 0; schedule(false); });
    $("dataset").addEventListener("change", (e) => { S.ds = e.target.value === "" ? -1 : Number(e.target.value); S.page = 0; schedule(false); });
    $("leak").addEventListener("change", (e) => { S.leak = e.target.checked; S.page = 0; schedule(false); });
    $("method").addEventListener("change", (e) => { S.method = e.target.value === "" ? -1 : Number(e.target.value); S.page = 0; schedule(true); });
    let typing = 0;
    $("search").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { S.q = e.target.value.trim().toLowerCase(); S.page = 0; schedule(false); }, 150);
    });
    $("controls").addEventListener("submit", (e) => e.preventDefault());
    for (const b of document.querySelectorAll("#tabs button")) {
      b.addEventListener("click", () => { S.view = b.dataset.view; S.page = 0; schedule(false); });
    }
    $("prev-page").addEventListener("click", () => { S.page--; schedule(false); window.scrollTo(0, 0); });
    $("next-page").addEventListener("click", () => { S.page++; schedule(false); window.scrollTo(0, 0); });
    $("modal-close").addEventListener("click", () => $("modal").close());
    document.addEventListener("keydown", (e) => {
      const dlg = $("modal"), nav = dlg.pairNav;
      if (!dlg.open || !nav || !dlg.dataset.pair) return;
      if (e.key === "ArrowRight" && nav.pos + 1 < nav.list.length) showPair(nav.list[nav.pos + 1], nav.list, nav.pos + 1);
      if (e.key === "ArrowLeft" && nav.pos > 0) showPair(nav.list[nav.pos - 1], nav.list, nav.pos - 1);
    });
    $("modal").addEventListener("close", () => { delete $("modal").dataset.pair; $("modal").pairNav = null; });
    compute();
    render();
  }
  setup();
}());
