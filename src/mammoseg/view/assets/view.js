/* mammoseg view: the case table (index.html) and one case (case.html).
 *
 * Plain JavaScript, no libraries, no network: the data come from data.js
 * (window.MAMMOSEG_VIEW), pictures from thumbs/ and full/ beside this file.
 * The list's sort, filters and page live in the URL (index.html?sort=dice&order=asc&outcome=FN),
 * so a link shows exactly a set of cases; case.html gets the same parameters so that
 * previous/next walk the list as it was sorted and filtered.
 */
(function () {
  "use strict";

  var DATA = window.MAMMOSEG_VIEW;
  // Areas are mm² when every case's pixel spacing is known (data.js says which), else pixels of the shown grid.
  var AREA_UNIT = DATA && DATA.area_unit === "mm²" ? "mm²" : "px";
  var OUTCOMES = ["TP", "FN", "FP", "TN"];
  var OUTCOME_TEXT = {
    TP: "mass in reference and prediction", FN: "mass in reference, none predicted",
    FP: "no mass in reference, mass predicted", TN: "no mass in reference or prediction"
  };
  // key -> [heading, kind]; kind "num" sorts numerically (missing values always last).
  var COLUMNS = {
    id: ["id", "text"], patient: ["patient", "text"], view: ["view", "text"], laterality: ["side", "text"],
    outcome: ["outcome", "text"], dice: ["Dice", "num"], iou: ["IoU", "num"], ref_area: ["reference " + AREA_UNIT, "num"],
    pred_area: ["predicted " + AREA_UNIT, "num"], n_fp: ["FP lesions", "num"], study_date: ["study date", "text"],
    prob_max: ["max probability", "num"], n_masses: ["predicted masses", "num"]
  };
  var TABLE = ["thumb", "id", "patient", "view", "laterality", "study_date", "outcome", "dice", "iou", "ref_area",
               "pred_area", "n_masses", "prob_max", "n_fp"];
  // The columns of the CSV export: the table's, plus the pixel counts and mm² where known.
  var CSV_COLUMNS = ["id", "patient", "view", "laterality", "study_date", "outcome", "dice", "iou", "ref_px", "pred_px",
                     "ref_mm2", "pred_mm2", "n_masses", "prob_max", "n_ref_lesions", "n_detected", "n_fp"];
  var SMALL_THUMB = 128;
  var LAYERS = [["image", "i", "image"], ["ref", "r", "reference"], ["pred", "p", "prediction"], ["prob", "m", "probability map"]];
  var PER_PAGE = 100;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function cases() {
    var cols = DATA.columns;
    return DATA.rows.map(function (r) {
      var c = {};
      for (var i = 0; i < cols.length; i++) c[cols[i]] = r[i];
      return c;
    });
  }

  function number(text) {
    if (text === null || text === "" || text === undefined) return null;
    var v = Number(text);
    return isFinite(v) ? v : null;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || v === "") return "—";
    return typeof v === "number" ? v.toFixed(digits === undefined ? 3 : digits) : String(v);
  }

  /* ---------------------------------------------------------------- list state (URL) */

  function readParams(search) {
    var q = new URLSearchParams(search);
    var sort = q.get("sort");
    var outcome = (q.get("outcome") || "").split(",").map(function (s) { return s.trim().toUpperCase(); })
      .filter(function (s) { return OUTCOMES.indexOf(s) >= 0; });
    var per = parseInt(q.get("per"), 10);
    return {
      sort: COLUMNS.hasOwnProperty(sort) ? sort : "id",
      order: q.get("order") === "desc" ? "desc" : "asc",
      outcome: outcome,
      dmin: number(q.get("dmin")),
      dmax: number(q.get("dmax")),
      q: q.get("q") || "",
      page: Math.max(1, parseInt(q.get("page"), 10) || 1),
      thumbs: q.get("thumbs") === "large" ? "large" : "small",
      per: per >= 10 && per <= 1000 ? per : PER_PAGE
    };
  }

  function listQuery(p, withPage) {
    var q = new URLSearchParams();
    if (p.sort !== "id") q.set("sort", p.sort);
    if (p.order !== "asc") q.set("order", p.order);
    if (p.outcome.length) q.set("outcome", p.outcome.join(","));
    if (p.dmin !== null) q.set("dmin", String(p.dmin));
    if (p.dmax !== null) q.set("dmax", String(p.dmax));
    if (p.q) q.set("q", p.q);
    if (p.per !== PER_PAGE) q.set("per", String(p.per));
    if (p.thumbs === "large") q.set("thumbs", "large");
    if (withPage && p.page > 1) q.set("page", String(p.page));
    return q.toString();
  }

  function compare(key, kind, dir) {
    return function (a, b) {
      var x = a[key], y = b[key];
      var xm = x === null || x === undefined || x === "", ym = y === null || y === undefined || y === "";
      if (xm !== ym) return xm ? 1 : -1;  // missing values last, whatever the order
      if (!xm) {
        if (kind === "num" && x !== y) return (x - y) * dir;
        if (kind !== "num" && x !== y) return (String(x) < String(y) ? -1 : 1) * dir;
      }
      return a.id < b.id ? -1 : (a.id > b.id ? 1 : 0);
    };
  }

  function select(all, p) {
    var text = p.q.toLowerCase();
    var list = all.filter(function (c) {
      if (p.outcome.length && p.outcome.indexOf(c.outcome) < 0) return false;
      if ((p.dmin !== null || p.dmax !== null) && (c.dice === null || c.dice === undefined)) return false;
      if (p.dmin !== null && c.dice < p.dmin) return false;
      if (p.dmax !== null && c.dice > p.dmax) return false;
      if (text && String(c.id).toLowerCase().indexOf(text) < 0 && String(c.patient).toLowerCase().indexOf(text) < 0) return false;
      return true;
    });
    return list.sort(compare(p.sort, COLUMNS[p.sort][1], p.order === "desc" ? -1 : 1));
  }

  function setUrl(query) {
    try {
      history.replaceState(null, "", location.pathname + (query ? "?" + query : ""));
    } catch (e) { /* some browsers refuse history on file:// pages; the links still carry the state */ }
  }

  /* ---------------------------------------------------------------- index page */

  function summaryItems(s, all) {
    var counts = {};
    OUTCOMES.forEach(function (o) { counts[o] = 0; });
    all.forEach(function (c) { if (counts.hasOwnProperty(c.outcome)) counts[c.outcome] += 1; });
    var items = [["images", all.length]];
    if (s) {
      items.push(["Dice mean ± SD", fmt(s.dice_mean, 4) + " ± " + fmt(s.dice_sd, 4)]);
      if (s.dice_ci95) {
        var unit = {patient: " (patients resampled)", image: " (images resampled)"}[s.ci_unit] || "";
        items.push(["95% CI of mean Dice" + unit, "[" + fmt(s.dice_ci95[0], 4) + ", " + fmt(s.dice_ci95[1], 4) + "]"]);
      }
      items.push(["Dice median", fmt(s.dice_median, 4)]);
      items.push(["IoU mean ± SD", fmt(s.iou_mean, 4) + " ± " + fmt(s.iou_sd, 4)]);
      items.push(["lesion sensitivity (IoU ≥ " + fmt(s.lesion_iou_threshold, 2) + ")", fmt(s.lesion_sensitivity, 3)]);
      items.push(["false positives / image", fmt(s.false_positives_per_image, 3)]);
      if (s.n_missing) items.push(["predictions missing (counted empty)", s.n_missing]);
    }
    items.push(["TP / FN / FP / TN", OUTCOMES.map(function (o) { return counts[o]; }).join(" / ")]);
    return items;
  }

  function renderSummary(all) {
    var s = DATA.summary, box = document.getElementById("summary");
    box.appendChild(el("h2", {}, "Summary"));
    var dl = el("dl", {"class": "summary", id: "summary-list"});
    summaryItems(s, all).forEach(function (kv) {
      var d = el("div");
      d.appendChild(el("dt", {}, kv[0]));
      d.appendChild(el("dd", {}, kv[1]));
      dl.appendChild(d);
    });
    box.appendChild(dl);
    var note = s ? "Scores: " + DATA.metrics_from + (s.split ? ", split " + s.split : "") + (s.grid ? ", grid " + s.grid : "") +
      ". An image with no mass in the reference and none predicted scores Dice 1; one empty and one not scores 0."
      : "Not evaluated: no reference masks were found, so Dice and IoU are empty (give the prepared folder with --data).";
    box.appendChild(el("p", {"class": "note"}, note));
    renderFroc(box);
  }

  function renderFroc(box) {
    var f = DATA.froc;
    if (!f) return;
    box.appendChild(el("h2", {}, "FROC"));
    var dl = el("dl", {"class": "summary", id: "froc-list"});
    // numeric order: a JS object lists integer-like keys ("1", "2") before the others ("0.125")
    var points = Object.keys(f.operating_points).sort(function (a, b) { return Number(a) - Number(b); });
    var items = [["mean sensitivity (" + points.length + " operating points)", fmt(f.mean_sensitivity, 3)]];
    points.forEach(function (k) {
      items.push(["sensitivity at " + k + " FP/image", fmt(f.operating_points[k], 3)]);
    });
    items.forEach(function (kv) {
      var d = el("div");
      d.appendChild(el("dt", {}, kv[0]));
      d.appendChild(el("dd", {}, kv[1]));
      dl.appendChild(d);
    });
    box.appendChild(dl);
    box.appendChild(el("p", {"class": "note"}, "Lesion-level FROC over " + f.n_images + " images with " + f.n_ref_lesions +
      " reference lesions (lesion IoU ≥ " + fmt(f.lesion_iou_threshold, 2) + "): the probability threshold sweeps, " +
      "and each operating point takes the sweep's point with the most false positives per image not above it."));
    box.appendChild(el("img", {src: f.figure, alt: "FROC curve: lesion sensitivity against false positives per image",
      id: "froc-curve", "class": "figure"}));
  }

  function renderBlocks(box, blocks) {
    blocks.forEach(function (b) {
      if (b.text) { box.appendChild(el("p", {"class": "note"}, b.text)); return; }
      var t = el("table"), tr = el("tr");
      b.header.forEach(function (h) { tr.appendChild(el("th", {}, h)); });
      t.appendChild(el("thead")).appendChild(tr);
      var body = t.appendChild(el("tbody"));
      b.rows.forEach(function (r) {
        var row = el("tr");
        r.forEach(function (v) { row.appendChild(el("td", {}, v)); });
        body.appendChild(row);
      });
      box.appendChild(t);
    });
  }

  function renderRun() {
    var run = DATA.run, box = document.getElementById("run");
    if (!run) return;
    box.hidden = false;
    document.getElementById("jump").hidden = false;
    box.className = "run";
    box.appendChild(el("h2", {}, "Run: " + run.model + " (" + run.weights + ")"));
    box.appendChild(el("p", {"class": "muted"}, run.run_dir));
    if (run.learning_curves) {
      box.appendChild(el("h2", {}, "Learning curves"));
      box.appendChild(el("img", {src: run.learning_curves, alt: "learning curves of every fold", id: "learning-curves"}));
    }
    box.appendChild(el("h2", {}, "Table 2"));
    renderBlocks(box, run.table2);
    if (run.settings) {
      box.appendChild(el("h2", {}, "What produced it"));
      var settings = el("div", {id: "run-settings"});
      renderBlocks(settings, run.settings);
      box.appendChild(settings);
    }
  }

  function renderHeader(p, onSort) {
    var row = document.getElementById("header-row");
    row.textContent = "";
    TABLE.forEach(function (key) {
      if (key === "thumb") { row.appendChild(el("th", {}, "overlay")); return; }
      var th = el("th", {"data-key": key, "class": COLUMNS[key][1] === "num" ? "num" : ""});
      if (p.sort === key) th.setAttribute("aria-sort", p.order === "asc" ? "ascending" : "descending");
      var b = el("button", {type: "button"}, COLUMNS[key][0]);
      b.addEventListener("click", function () { onSort(key); });
      th.appendChild(b);
      row.appendChild(th);
    });
  }

  function caseLink(c, p) {
    var q = listQuery(p, false);
    return "case.html?id=" + encodeURIComponent(c.id) + (q ? "&" + q : "");
  }

  function tableRow(c, p) {
    var tr = el("tr", {"data-id": c.id, "data-outcome": c.outcome});
    var td = el("td", {"class": "thumb"}), a = el("a", {href: caseLink(c, p)});
    var k = p.thumbs === "large" ? 1 : Math.min(1, SMALL_THUMB / Math.max(c.tw, c.th));
    a.appendChild(el("img", {src: "thumbs/" + c.f + ".png", loading: "lazy", decoding: "async",
                             width: Math.round(c.tw * k), height: Math.round(c.th * k), alt: "overlay of " + c.id}));
    td.appendChild(a);
    tr.appendChild(td);
    TABLE.slice(1).forEach(function (key) {
      var cell = el("td", {"class": COLUMNS[key][1] === "num" ? "num" : "", "data-key": key});
      if (key === "id") cell.appendChild(el("a", {href: caseLink(c, p)}, c.id));
      else if (key === "patient" && c.patient) cell.appendChild(el("a", {href: patientHref(c.patient, listQuery(p, false), "irp"), title: "all views of " + c.patient}, c.patient));
      else if (key === "prob_max") cell.textContent = fmt(c.prob_max, 2);
      else if (key === "outcome" && c.outcome) cell.appendChild(el("span", {"class": "outcome outcome-" + c.outcome, title: OUTCOME_TEXT[c.outcome]}, c.outcome));
      else if (key === "dice" || key === "iou") { cell.textContent = fmt(c[key], 3); if (c[key] !== null) cell.title = String(c[key]); }
      else cell.textContent = c[key] === null || c[key] === "" || c[key] === undefined ? "—" : String(c[key]);
      tr.appendChild(cell);
    });
    return tr;
  }

  function renderPager(n, p, go) {
    var nav = document.getElementById("pager"), pages = Math.max(1, Math.ceil(n / p.per));
    nav.textContent = "";
    var prev = el("button", {type: "button", id: "page-prev"}, "← previous page");
    var next = el("button", {type: "button", id: "page-next"}, "next page →");
    prev.disabled = p.page <= 1;
    next.disabled = p.page >= pages;
    prev.addEventListener("click", function () { go(p.page - 1); });
    next.addEventListener("click", function () { go(p.page + 1); });
    nav.appendChild(prev);
    nav.appendChild(el("span", {id: "page-info"}, "page " + p.page + " of " + pages));
    nav.appendChild(next);
  }

  function setupFilters(all, p, update) {
    var boxes = document.getElementById("outcome-boxes");
    OUTCOMES.forEach(function (o) {
      var n = all.filter(function (c) { return c.outcome === o; }).length;
      var label = el("label", {title: OUTCOME_TEXT[o]});
      var box = el("input", {type: "checkbox", value: o, id: "outcome-" + o});
      box.checked = p.outcome.indexOf(o) >= 0;
      box.addEventListener("change", function () {
        p.outcome = OUTCOMES.filter(function (x) { return document.getElementById("outcome-" + x).checked; });
        update(true);
      });
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + o + " (" + n + ")"));
      boxes.appendChild(label);
    });
    var dmin = document.getElementById("dmin"), dmax = document.getElementById("dmax");
    var q = document.getElementById("q"), per = document.getElementById("per");
    dmin.value = p.dmin === null ? "" : p.dmin;
    dmax.value = p.dmax === null ? "" : p.dmax;
    q.value = p.q;
    if (!Array.prototype.some.call(per.options, function (o) { return Number(o.value) === p.per; })) per.appendChild(el("option", {}, p.per));
    per.value = String(p.per);
    dmin.addEventListener("input", function () { p.dmin = number(dmin.value); update(true); });
    dmax.addEventListener("input", function () { p.dmax = number(dmax.value); update(true); });
    q.addEventListener("input", function () { p.q = q.value.trim(); update(true); });
    per.addEventListener("change", function () { p.per = Number(per.value); update(true); });
    var thumbs = document.getElementById("large-thumbs");
    thumbs.checked = p.thumbs === "large";
    thumbs.addEventListener("change", function () { p.thumbs = thumbs.checked ? "large" : "small"; update(false); });
    document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
  }

  // The filtered, sorted list (every page) as CSV text; a cell with a comma, quote or line break is quoted.
  function csvText(list) {
    function cell(v) {
      var t = v === null || v === undefined ? "" : String(v);
      return /[",\r\n]/.test(t) ? '"' + t.replace(/"/g, '""') + '"' : t;
    }
    return [CSV_COLUMNS.join(",")].concat(list.map(function (c) {
      return CSV_COLUMNS.map(function (k) { return cell(c[k]); }).join(",");
    })).join("\r\n") + "\r\n";
  }

  // A Blob download of the current list: made when clicked, so it is always the list on screen.
  function setupExport(current) {
    var a = document.getElementById("export");
    a.addEventListener("click", function () {
      if (a.href) URL.revokeObjectURL(a.href);
      a.href = URL.createObjectURL(new Blob([csvText(current())], {type: "text/csv"}));
    });
  }

  function renderIndex() {
    var all = cases(), p = readParams(location.search);
    document.getElementById("source").textContent = DATA.kind + ": " + DATA.source;
    renderSummary(all);
    renderRun();
    legend(document.getElementById("legend"));
    function update(resetPage) {
      if (resetPage) p.page = 1;
      var list = select(all, p), pages = Math.max(1, Math.ceil(list.length / p.per));
      p.page = Math.min(p.page, pages);
      renderHeader(p, function (key) {
        p.order = p.sort === key && p.order === "asc" ? "desc" : "asc";
        p.sort = key;
        update(true);
      });
      var body = document.getElementById("case-rows"), frag = document.createDocumentFragment();
      list.slice((p.page - 1) * p.per, p.page * p.per).forEach(function (c) { frag.appendChild(tableRow(c, p)); });
      body.textContent = "";
      body.appendChild(frag);
      document.getElementById("count").textContent = list.length + " of " + all.length + " images";
      document.body.setAttribute("data-matching", String(list.length));
      renderPager(list.length, p, function (page) { p.page = page; update(false); window.scrollTo(0, 0); });
      setUrl(listQuery(p, true));
    }
    setupFilters(all, p, update);
    setupExport(function () { return select(all, p); });
    update(false);
  }

  /* ---------------------------------------------------------------- case data (full/<f>.js) */

  // full/<f>.js calls MAMMOSEG_CASE(name, payload); a <script> tag loads it (fetch() is refused on file://).
  var pending = {};
  window.MAMMOSEG_CASE = function (name, payload) {
    if (pending[name]) pending[name].resolve(payload);
  };

  function bytes(b64) {
    var text = atob(b64), out = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  // zlib → bytes with the browser's own DecompressionStream (no library, works offline).
  function inflate(b64) {
    if (b64 === null || b64 === undefined) return Promise.resolve(null);
    var stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (buf) { return new Uint8Array(buf); });
  }

  // The image's 16-bit values: high-byte plane, low-byte plane of row-wise differences (see casedata.py).
  function undelta(planes, w, h) {
    var n = w * h, out = new Uint16Array(n);
    for (var y = 0; y < h; y++) {
      var acc = 0, row = y * w;
      for (var x = 0; x < w; x++) {
        acc = (acc + ((planes[row + x] << 8) | planes[n + row + x])) & 0xFFFF;
        out[row + x] = acc;
      }
    }
    return out;
  }

  function loadCase(name) {
    var done = new Promise(function (resolve, reject) { pending[name] = {resolve: resolve}; });
    var script = el("script", {src: "full/" + encodeURIComponent(name) + ".js"});
    var failed = new Promise(function (resolve, reject) {
      script.onerror = function () { reject(new Error("full/" + name + ".js is missing: write the site again")); };
    });
    document.head.appendChild(script);
    return Promise.race([done, failed]).then(function (p) {
      return Promise.all([inflate(p.pixels), inflate(p.ref), inflate(p.pred), inflate(p.prob)]).then(function (a) {
        p.pixels = a[0] && undelta(a[0], p.w, p.h);
        p.ref = a[1]; p.pred = a[2]; p.prob = a[3];
        return p;
      });
    });
  }

  /* ---------------------------------------------------------------- image viewer (canvas) */

  // Linked state: window (c, w), zoom relative to "fit", the image point at the centre (fractions),
  // layers, overlay mode and opacity. Views of one patient share it, so they move together.
  function Shared(show) {
    this.views = [];
    this.c = null; this.w = null; this.zoom = 1; this.cx = 0.5; this.cy = 0.5;
    this.layers = {image: show.indexOf("i") >= 0, ref: show.indexOf("r") >= 0, pred: show.indexOf("p") >= 0,
                   prob: show.indexOf("m") >= 0};
    this.mode = "outline"; this.opacity = 1; this.preset = 0;
    this.onchange = function () {};
  }

  Shared.prototype.redraw = function (windowChanged) {
    this.views.forEach(function (v) { v.draw(windowChanged); });
    this.onchange();
  };

  Shared.prototype.setWindow = function (c, w) {
    this.c = c; this.w = Math.max(1, w);
    this.redraw(true);
  };

  Shared.prototype.usePreset = function (index) {
    var p = this.views[0].data.presets[index];
    if (!p) return;
    this.preset = index;
    this.setWindow((p.low + p.high) / 2, p.high - p.low);
  };

  // grey = round(255 · clamp((v − (c − w/2)) / w, 0, 1)): the window formula docs/view.md states.
  function windowLut(top, c, w) {
    var lut = new Uint8ClampedArray(top + 1), low = c - w / 2;
    for (var v = 0; v <= top; v++) lut[v] = Math.round(255 * Math.min(1, Math.max(0, (v - low) / w)));
    return lut;
  }

  function ImageView(box, data, shared) {
    this.box = box; this.data = data; this.shared = shared;
    this.canvas = el("canvas", {"class": "image-canvas"});
    this.overlay = el("canvas", {"class": "overlay-canvas"});
    box.appendChild(this.canvas);
    box.appendChild(this.overlay);
    this.source = document.createElement("canvas");  // the windowed image at the kept resolution
    this.source.width = data.w; this.source.height = data.h;
    this.hasImage = !!data.pixels;
    shared.views.push(this);
    this.listen();
  }

  ImageView.prototype.fitScale = function () {
    return Math.min(this.canvas.width / this.data.w, this.canvas.height / this.data.h);
  };

  ImageView.prototype.scale = function () { return this.fitScale() * this.shared.zoom; };

  // Screen (canvas) position of the image point (x, y) in kept-resolution pixels, and back.
  ImageView.prototype.origin = function () {
    var s = this.scale(), sh = this.shared;
    return [this.canvas.width / 2 - sh.cx * this.data.w * s, this.canvas.height / 2 - sh.cy * this.data.h * s];
  };

  ImageView.prototype.toImage = function (sx, sy) {
    var o = this.origin(), s = this.scale();
    return [(sx - o[0]) / s, (sy - o[1]) / s];
  };

  ImageView.prototype.toScreen = function (x, y) {
    var o = this.origin(), s = this.scale();
    return [o[0] + x * s, o[1] + y * s];
  };

  ImageView.prototype.resize = function (width, height) {
    [this.canvas, this.overlay].forEach(function (c) { c.width = Math.max(1, Math.floor(width)); c.height = Math.max(1, Math.floor(height)); });
    this.box.style.width = this.canvas.width + "px";
    this.box.style.height = this.canvas.height + "px";
  };

  ImageView.prototype.renderSource = function () {
    if (!this.hasImage) return;
    var lut = windowLut(this.data.top, this.shared.c, this.shared.w), px = this.data.pixels;
    var img = new ImageData(this.data.w, this.data.h), d = img.data;
    for (var i = 0, j = 0; i < px.length; i++, j += 4) {
      var g = lut[px[i]];
      d[j] = g; d[j + 1] = g; d[j + 2] = g; d[j + 3] = 255;
    }
    this.source.getContext("2d").putImageData(img, 0, 0);
  };

  ImageView.prototype.draw = function (windowChanged) {
    if (windowChanged || !this.rendered) { this.renderSource(); this.rendered = true; }
    var ctx = this.canvas.getContext("2d"), s = this.scale(), o = this.origin();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.hasImage && this.shared.layers.image) {
      ctx.imageSmoothingEnabled = s < 1;  // shrinking: smooth; enlarging: every image pixel a crisp square
      ctx.imageSmoothingQuality = "high";
      ctx.setTransform(s, 0, 0, s, o[0], o[1]);
      ctx.drawImage(this.source, 0, 0);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
    }
    this.drawOverlay(s, o);
  };

  // Per screen pixel: which image pixel it shows (nearest), so the overlays sit on the image at any zoom.
  function sampleMask(mask, w, h, cols, rows, W, H) {
    var out = new Uint8Array(W * H);
    if (!mask) return out;
    for (var y = 0; y < H; y++) {
      var iy = rows[y];
      if (iy < 0) continue;
      for (var x = 0; x < W; x++) {
        var ix = cols[x];
        if (ix >= 0 && mask[iy * w + ix]) out[y * W + x] = 1;
      }
    }
    return out;
  }

  // Max (grow) or min (shrink) of a 0/1 screen mask over a square of radius r.
  function morph(m, W, H, r, grow) {
    var tmp = new Uint8Array(W * H), out = new Uint8Array(W * H), x, y, k, v;
    for (y = 0; y < H; y++) for (x = 0; x < W; x++) {
      v = grow ? 0 : 1;
      for (k = -r; k <= r; k++) { var xx = x + k, b = xx >= 0 && xx < W ? m[y * W + xx] : 0; v = grow ? (v | b) : (v & b); }
      tmp[y * W + x] = v;
    }
    for (y = 0; y < H; y++) for (x = 0; x < W; x++) {
      v = grow ? 0 : 1;
      for (k = -r; k <= r; k++) { var yy = y + k, c = yy >= 0 && yy < H ? tmp[yy * W + x] : 0; v = grow ? (v | c) : (v & c); }
      out[y * W + x] = v;
    }
    return out;
  }

  function hexRgb(hex) { return [1, 3, 5].map(function (i) { return parseInt(hex.substr(i, 2), 16); }); }

  ImageView.prototype.drawOverlay = function (s, o) {
    var W = this.overlay.width, H = this.overlay.height, d = this.data, sh = this.shared;
    var ctx = this.overlay.getContext("2d");
    var cols = new Int32Array(W), rows = new Int32Array(H), x, y, i;
    for (x = 0; x < W; x++) { var ix = Math.floor((x + 0.5 - o[0]) / s); cols[x] = ix >= 0 && ix < d.w ? ix : -1; }
    for (y = 0; y < H; y++) { var iy = Math.floor((y + 0.5 - o[1]) / s); rows[y] = iy >= 0 && iy < d.h ? iy : -1; }
    var img = ctx.createImageData(W, H), out = img.data, alpha = Math.round(255 * sh.opacity);
    if (sh.layers.prob && d.prob) {
      var lut = DATA.prob_colours.map(hexRgb);
      for (y = 0; y < H; y++) {
        if (rows[y] < 0) continue;
        for (x = 0; x < W; x++) {
          if (cols[x] < 0) continue;
          var p = d.prob[rows[y] * d.w + cols[x]];
          if (p < 5) continue;  // transparent near 0 (p < 0.02)
          i = (y * W + x) * 4;
          out[i] = lut[p][0]; out[i + 1] = lut[p][1]; out[i + 2] = lut[p][2];
          out[i + 3] = Math.round((0.25 + 0.6 * p / 255) * alpha);
        }
      }
    }
    [["ref", DATA.colours.reference], ["pred", DATA.colours.prediction]].forEach(function (layer) {
      if (!sh.layers[layer[0]] || !d[layer[0]]) return;
      var rgb = hexRgb(layer[1]), m = sampleMask(d[layer[0]], d.w, d.h, cols, rows, W, H), k;
      if (sh.mode === "fill") {
        for (k = 0; k < W * H; k++) if (m[k]) { out[4 * k] = rgb[0]; out[4 * k + 1] = rgb[1]; out[4 * k + 2] = rgb[2]; out[4 * k + 3] = alpha; }
        return;
      }
      var inner = morph(m, W, H, 2, false), outer = morph(m, W, H, 1, true);  // a 2-pixel line inside, a 1-pixel dark rim outside
      for (k = 0; k < W * H; k++) {
        if (m[k] && !inner[k]) { out[4 * k] = rgb[0]; out[4 * k + 1] = rgb[1]; out[4 * k + 2] = rgb[2]; out[4 * k + 3] = alpha; }
        else if (outer[k] && !m[k] && out[4 * k + 3] === 0) { out[4 * k + 3] = Math.round(0.6 * alpha); }  // dark rim
      }
    });
    ctx.putImageData(img, 0, 0);
    if (sh.layers.pred && d.masses) this.labelMasses(ctx, s, o);
  };

  // The mass numbers of the measurements list, above each predicted mass's box.
  ImageView.prototype.labelMasses = function (ctx, s, o) {
    var k = this.data.w / this.data.grid_w;
    ctx.font = "bold 13px system-ui, sans-serif";
    ctx.fillStyle = DATA.colours.prediction;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 3;
    this.data.masses.forEach(function (m) {
      var x = o[0] + m.box[0] * k * s, y = o[1] + m.box[1] * k * s - 4;
      ctx.strokeText(String(m.n), x, y);
      ctx.fillText(String(m.n), x, y);
    });
  };

  // Wheel: zoom about the pointer. Left drag: pan. Right drag, or Shift/Ctrl + left drag: window/level.
  ImageView.prototype.listen = function () {
    var self = this, sh = this.shared, drag = null;
    this.overlay.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = self.overlay.getBoundingClientRect();
      self.zoomAbout(Math.exp(-e.deltaY * 0.002), e.clientX - r.left, e.clientY - r.top);
    }, {passive: false});
    this.overlay.addEventListener("contextmenu", function (e) { e.preventDefault(); });
    this.overlay.addEventListener("mousedown", function (e) {
      var wl = e.button === 2 || (e.button === 0 && (e.shiftKey || e.ctrlKey));
      drag = {x: e.clientX, y: e.clientY, wl: wl, c: sh.c, w: sh.w, cx: sh.cx, cy: sh.cy};
      e.preventDefault();
    });
    window.addEventListener("mousemove", function (e) {
      if (!drag) return;
      var dx = e.clientX - drag.x, dy = e.clientY - drag.y, s = self.scale();
      if (drag.wl) {
        var step = self.wlStep();
        sh.setWindow(drag.c + dy * step, drag.w + dx * step);  // right: wider; down: higher level (darker)
      } else {
        sh.cx = drag.cx - dx / (s * self.data.w); sh.cy = drag.cy - dy / (s * self.data.h);
        sh.redraw(false);
      }
    });
    window.addEventListener("mouseup", function () { drag = null; });
  };

  // Window change per screen pixel dragged: the values present, over 500 pixels.
  ImageView.prototype.wlStep = function () {
    var full = this.data.presets[1];
    return full ? Math.max(1, (full.high - full.low) / 500) : 1;
  };

  ImageView.prototype.zoomAbout = function (factor, sx, sy) {
    var sh = this.shared, before = this.toImage(sx, sy);
    sh.zoom = Math.min(64 / this.fitScale(), Math.max(0.1, sh.zoom * factor));
    var after = this.toImage(sx, sy);  // keep the image point under the pointer where it was
    sh.cx += (before[0] - after[0]) / this.data.w;
    sh.cy += (before[1] - after[1]) / this.data.h;
    sh.redraw(false);
  };

  ImageView.prototype.actualSize = function () {
    this.shared.zoom = 1 / this.fitScale();
    this.shared.redraw(false);
  };

  /* ---------------------------------------------------------------- viewer controls (both pages) */

  function legend(node) {
    node.textContent = "";
    [["ref", "reference"], ["pred", "prediction"]].forEach(function (l) {
      node.appendChild(el("span", {"class": "swatch " + l[0]}));
      node.appendChild(document.createTextNode(l[1]));
    });
  }

  // The probability map's colour scale with predict's threshold marked.
  function colourBar(node) {
    var bar = el("div", {"class": "colour-bar", id: "colour-bar"}), t = DATA.threshold === undefined ? 0.5 : DATA.threshold;
    var stops = DATA.prob_colours.filter(function (c, i) { return i % 32 === 0 || i === 255; });
    bar.style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    var mark = el("span", {"class": "threshold-mark", title: "threshold " + t});
    mark.style.left = (100 * t) + "%";
    bar.appendChild(mark);
    node.appendChild(el("p", {"class": "muted"}, "probability map"));
    node.appendChild(bar);
    var scale = el("p", {"class": "bar-scale muted"});
    scale.appendChild(el("span", {}, "0"));
    scale.appendChild(el("span", {id: "threshold-label"}, "threshold " + t));
    scale.appendChild(el("span", {}, "1"));
    node.appendChild(scale);
  }

  function Controls(shared, missing) {
    var buttons = document.getElementById("layer-buttons");
    this.shared = shared;
    LAYERS.forEach(function (l) {
      var b = el("button", {type: "button", id: "button-" + l[0]});
      b.appendChild(el("kbd", {}, l[1]));
      b.appendChild(document.createTextNode(" " + l[2] + (missing[l[0]] ? " (none)" : "")));
      if (missing[l[0]]) { b.disabled = true; shared.layers[l[0]] = false; }
      b.addEventListener("click", function () { shared.layers[l[0]] = !shared.layers[l[0]]; shared.redraw(false); });
      buttons.appendChild(b);
    });
    var presets = document.getElementById("presets");
    shared.views[0].data.presets.forEach(function (p, i) {
      var b = el("button", {type: "button", id: "preset-" + i, title: p.low + " – " + p.high}, p.name);
      b.addEventListener("click", function () { shared.usePreset(i); });
      presets.appendChild(b);
    });
    var mode = document.getElementById("mode"), opacity = document.getElementById("opacity");
    mode.addEventListener("change", function () { shared.mode = mode.value; shared.redraw(false); });
    opacity.addEventListener("input", function () { shared.opacity = Number(opacity.value) / 100; shared.redraw(false); });
    legend(document.getElementById("legend"));
    colourBar(document.getElementById("prob-scale"));
  }

  Controls.prototype.update = function () {
    var sh = this.shared, v = sh.views[0];
    LAYERS.forEach(function (l) {
      document.getElementById("button-" + l[0]).setAttribute("aria-pressed", sh.layers[l[0]] ? "true" : "false");
    });
    document.getElementById("mode").value = sh.mode;
    document.getElementById("opacity").value = String(Math.round(sh.opacity * 100));
    document.getElementById("window-text").textContent = "window " + Math.round(sh.c - sh.w / 2) + " – " +
      Math.round(sh.c + sh.w / 2) + " (C " + Math.round(sh.c) + ", W " + Math.round(sh.w) + ")";
    document.getElementById("zoom-text").textContent = "zoom " + Math.round(100 * v.scale()) + " %";
    document.getElementById("prob-scale").hidden = !sh.layers.prob;
    document.body.setAttribute("data-show", showLetters(sh));
  };

  function showLetters(sh) {
    return LAYERS.filter(function (l) { return sh.layers[l[0]]; }).map(function (l) { return l[1]; }).join("");
  }

  // Keys shared by the case and the patient page; returns false for a key they do not use.
  function viewerKey(sh, key, shift) {
    var layer = LAYERS.filter(function (l) { return l[1] === key; })[0], v = sh.views[0];
    var cx = v.canvas.width / 2, cy = v.canvas.height / 2;
    if (layer) { if (!document.getElementById("button-" + layer[0]).disabled) { sh.layers[layer[0]] = !sh.layers[layer[0]]; sh.redraw(false); } }
    else if (key === "+" || key === "=") v.zoomAbout(1.25, cx, cy);
    else if (key === "-" || key === "_") v.zoomAbout(0.8, cx, cy);
    else if (key === "0") { sh.zoom = 1; sh.cx = 0.5; sh.cy = 0.5; sh.redraw(false); }
    else if (key === "1") v.actualSize();
    else if (key === "f") { if (Math.abs(sh.zoom - 1) < 1e-9) v.actualSize(); else { sh.zoom = 1; sh.cx = 0.5; sh.cy = 0.5; sh.redraw(false); } }
    else if (key === "o") { sh.mode = sh.mode === "outline" ? "fill" : "outline"; sh.redraw(false); }
    else if (key === "w") sh.usePreset((sh.preset + (shift ? -1 + v.data.presets.length : 1)) % v.data.presets.length);
    else if (key === "x") sh.usePreset(0);
    else return false;
    return true;
  }

  // Keys go to the viewer unless a modifier is held or the focus is in a box that takes text
  // (a slider or a drop-down keeps only its own arrow keys).
  function typing(e) {
    var t = e.target, text = t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && !/^(range|checkbox|radio|button)$/.test(t.type));
    return e.ctrlKey || e.metaKey || e.altKey || text;
  }

  function keyOf(e) { return e.key.length === 1 ? e.key.toLowerCase() : e.key; }

  /* ---------------------------------------------------------------- measurements */

  function massList(node, data) {
    node.textContent = "";
    node.appendChild(el("h2", {}, "Predicted masses"));
    if (!data.masses.length) { node.appendChild(el("p", {"class": "muted"}, "none")); return; }
    var t = el("table", {"class": "masses"}), head = el("tr");
    ["#", "area", "max diameter", "mean prob."].forEach(function (h) { head.appendChild(el("th", {}, h)); });
    t.appendChild(el("thead")).appendChild(head);
    var body = t.appendChild(el("tbody"));
    data.masses.forEach(function (m) {
      var tr = el("tr", {"data-mass": m.n});
      tr.appendChild(el("td", {}, m.n));
      tr.appendChild(el("td", {"class": "num"}, m.area_mm2 === null ? m.area_px + " px" : m.area_mm2.toFixed(1) + " mm²"));
      tr.appendChild(el("td", {"class": "num"}, m.feret_mm === null ? m.feret_px.toFixed(1) + " px" : m.feret_mm.toFixed(1) + " mm"));
      tr.appendChild(el("td", {"class": "num"}, fmt(m.prob_mean, 2)));
      body.appendChild(tr);
    });
    node.appendChild(t);
    if (!data.spacing) node.appendChild(el("p", {"class": "muted"}, "pixel spacing unknown: sizes in pixels of the image's grid"));
  }

  /* ---------------------------------------------------------------- case page */

  function fact(dl, name, value) {
    dl.appendChild(el("dt", {}, name));
    dl.appendChild(el("dd", {}, value));
  }

  // "1234 px (56.78 mm²)": pixels of the shown grid, and mm² where the pixel spacing is known.
  function area(px, mm2) {
    if (px === null || px === undefined) return "—";
    return px + " px" + (mm2 === null || mm2 === undefined ? "" : " (" + mm2 + " mm²)");
  }

  function renderFacts(c) {
    var dl = document.getElementById("facts");
    fact(dl, "outcome", c.outcome ? c.outcome + " — " + OUTCOME_TEXT[c.outcome] : "—");
    fact(dl, "Dice", fmt(c.dice, 4));
    fact(dl, "IoU", fmt(c.iou, 4));
    fact(dl, "reference area", area(c.ref_px, c.ref_mm2));
    fact(dl, "predicted area", area(c.pred_px, c.pred_mm2));
    fact(dl, "lesions found", c.n_ref_lesions === null ? "—" : c.n_detected + " of " + c.n_ref_lesions + ", " + c.n_fp + " false positive(s)");
    fact(dl, "patient", c.patient || "—");
    fact(dl, "view / side", (c.view || "—") + " / " + (c.laterality || "—"));
    if (c.study_date) fact(dl, "study date", c.study_date);
  }

  // The case asked for in the URL, within the list as sorted and filtered there (all cases if filtered out).
  function locate(all, p, id) {
    var list = select(all, p);
    var index = list.findIndex(function (c) { return c.id === id; });
    if (index < 0) { list = all; index = all.findIndex(function (c) { return c.id === id; }); }
    return {list: list, index: index, c: index >= 0 ? list[index] : null};
  }

  function caseHref(id, listQ, show) {
    return "case.html?id=" + encodeURIComponent(id) + (listQ ? "&" + listQ : "") + "&show=" + show;
  }

  function patientHref(patient, listQ, show) {
    return "patient.html?patient=" + encodeURIComponent(patient) + (listQ ? "&" + listQ : "") + "&show=" + show;
  }

  function sizeNote(c) {
    return "Shown from " + c.w + " × " + c.h + " px kept of the " + c.grid_w + " × " + c.grid_h + " px image" +
      (DATA.max_side ? " (at most " + DATA.max_side + " px on the long side; `view --full-resolution` keeps all)." : " (full resolution).");
  }

  function renderCase() {
    var q = new URLSearchParams(location.search), p = readParams(location.search);
    var where = locate(cases(), p, q.get("id")), c = where.c, listQ = listQuery(p, false);
    if (!c) {
      document.getElementById("case-title").textContent = "no case " + q.get("id") + " in this view";
      return;
    }
    document.title = "mammoseg — " + c.id;
    document.body.setAttribute("data-case-id", c.id);
    document.getElementById("case-title").textContent = c.id + (c.dice === null ? "" : " — Dice " + fmt(c.dice, 3));
    document.getElementById("position").textContent = (where.index + 1) + " of " + where.list.length;
    document.getElementById("back").href = "index.html" + (listQ ? "?" + listQ : "");
    renderFacts(c);
    var shared = new Shared(q.get("show") === null ? "irp" : q.get("show"));
    window.MAMMOSEG_VIEWER = shared;  // the viewer's state, for scripts and the page tests
    loadCase(c.f).then(function (data) {
      var view = new ImageView(document.getElementById("stage"), data, shared);
      var controls = new Controls(shared, {image: !data.pixels, ref: !data.ref, prob: !data.prob});
      var port = document.getElementById("viewport");
      function size() { view.resize(port.clientWidth, Math.max(200, window.innerHeight - port.getBoundingClientRect().top - 8)); }
      size();
      document.getElementById("size-note").textContent = sizeNote(c);
      massList(document.getElementById("masses"), data);
      var both = document.getElementById("patient-link");
      shared.onchange = function () {
        controls.update();
        var show = showLetters(shared);
        [["prev", -1], ["next", 1]].forEach(function (pair) {
          var a = document.getElementById(pair[0]), to = where.list[where.index + pair[1]];
          if (to) a.href = caseHref(to.id, listQ, show); else a.removeAttribute("href");
        });
        if (c.patient) both.href = patientHref(c.patient, listQ, show); else both.removeAttribute("href");
        setUrl(caseHref(c.id, listQ, show).split("?")[1]);
      };
      if (data.presets.length) shared.usePreset(0); else shared.setWindow(128, 256);
      window.addEventListener("resize", function () { size(); shared.redraw(false); });
      document.addEventListener("keydown", function (e) {
        if (typing(e)) return;
        var key = keyOf(e), step = {ArrowRight: "next", ArrowLeft: "prev"}[key];
        if (viewerKey(shared, key, e.shiftKey)) { /* handled */ }
        else if (step && document.getElementById(step).href) location.href = document.getElementById(step).href;
        else if (key === "v" && both.href) location.href = both.href;
        else if (key === "Escape") location.href = document.getElementById("back").href;
        else return;
        e.preventDefault();
      });
      document.body.setAttribute("data-ready", "1");
    }).catch(function (err) {
      document.getElementById("size-note").textContent = String(err.message || err);
      console.error(String(err.message || err));
    });
  }

  /* ---------------------------------------------------------------- patient page */

  var VIEW_ORDER = ["CC", "MLO"];

  // Rows: CC, MLO, then any other view; columns: right breast, left breast (as on a light box).
  function hanging(list) {
    var views = [];
    list.forEach(function (c) { if (views.indexOf(c.view) < 0) views.push(c.view); });
    views.sort(function (a, b) {
      var ia = VIEW_ORDER.indexOf(a), ib = VIEW_ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || (a < b ? -1 : a > b ? 1 : 0);
    });
    return views.map(function (v) {
      return ["R", "L"].map(function (side) {
        return list.filter(function (c) { return c.view === v && c.laterality === side; });
      }).concat([list.filter(function (c) { return c.view === v && c.laterality !== "R" && c.laterality !== "L"; })]);
    });
  }

  function patientCell(c, listQ) {
    var cell = el("figure", {"class": "cell", "data-id": c.id});
    var cap = el("figcaption");
    cap.appendChild(el("strong", {}, (c.laterality || "?") + " " + (c.view || "?") + " "));
    cap.appendChild(el("a", {href: caseHref(c.id, listQ, "irp")}, c.id));
    if (c.study_date) cap.appendChild(document.createTextNode(" · " + c.study_date));
    if (c.dice !== null && c.dice !== undefined) cap.appendChild(document.createTextNode(" · Dice " + fmt(c.dice, 3)));
    cell.appendChild(cap);
    var inner = el("div", {"class": "cell-inner"});
    inner.appendChild(el("div", {"class": "stage"}));
    inner.appendChild(el("div", {"class": "cell-masses"}));
    cell.appendChild(inner);
    return cell;
  }

  function renderPatient() {
    var q = new URLSearchParams(location.search), p = readParams(location.search), listQ = listQuery(p, false);
    var patient = q.get("patient") || "";
    var list = cases().filter(function (c) { return c.patient === patient; });
    document.getElementById("back").href = "index.html" + (listQ ? "?" + listQ : "");
    document.getElementById("patient-title").textContent = "patient " + patient + " — " + list.length + " image(s)";
    document.title = "mammoseg — patient " + patient;
    if (!list.length) return;
    var grid = document.getElementById("grid"), cells = [];
    hanging(list).forEach(function (row) {
      var tr = el("div", {"class": "grid-row"}), view = row[0].concat(row[1], row[2])[0].view;
      row.forEach(function (group, k) {
        if (!group.length && k < 2) tr.appendChild(el("figure", {"class": "cell empty"}, ["R", "L"][k] + " " + (view || "?") + ": no image"));
        group.forEach(function (c) { var cell = patientCell(c, listQ); cells.push([c, cell]); tr.appendChild(cell); });
      });
      grid.appendChild(tr);
    });
    var shared = new Shared(q.get("show") === null ? "irp" : q.get("show"));
    window.MAMMOSEG_VIEWER = shared;
    document.addEventListener("keydown", function (e) {
      if (typing(e)) return;
      var key = keyOf(e);
      if (key === "Escape") location.href = document.getElementById("back").href;
      else if (!document.body.hasAttribute("data-ready") || !viewerKey(shared, key, e.shiftKey)) return;
      e.preventDefault();
    });
    Promise.all(cells.map(function (pair) { return loadCase(pair[0].f); })).then(function (all) {
      var rows = grid.children.length;
      var height = Math.max(220, (window.innerHeight - grid.getBoundingClientRect().top) / rows - 40);
      all.forEach(function (data, i) {
        var cell = cells[i][1], masses = cell.querySelector(".cell-masses");
        massList(masses, data);
        var view = new ImageView(cell.querySelector(".stage"), data, shared);
        view.resize(Math.max(160, cell.querySelector(".cell-inner").clientWidth - masses.offsetWidth - 12), height);
      });
      var controls = new Controls(shared, {image: !all.some(function (d) { return d.pixels; }),
                                           ref: !all.some(function (d) { return d.ref; }), prob: !all.some(function (d) { return d.prob; })});
      shared.onchange = function () { controls.update(); };
      if (all[0].presets.length) shared.usePreset(0); else shared.setWindow(128, 256);
      document.body.setAttribute("data-ready", "1");
    }).catch(function (err) { console.error(String(err.message || err)); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!DATA) {
      document.body.insertBefore(el("p", {"class": "warning"}, "data.js is missing: write the site again with `mammoseg view`."), document.body.firstChild);
      return;
    }
    var page = document.body.getAttribute("data-page");
    if (page === "case") renderCase();
    else if (page === "patient") renderPatient();
    else renderIndex();
  });
})();
