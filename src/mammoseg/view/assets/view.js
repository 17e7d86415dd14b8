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
    pred_area: ["predicted " + AREA_UNIT, "num"], n_fp: ["FP lesions", "num"]
  };
  var TABLE = ["thumb", "id", "patient", "view", "laterality", "outcome", "dice", "iou", "ref_area", "pred_area", "n_fp"];
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

  function legend(node) {
    node.appendChild(el("span", {"class": "swatch ref"}));
    node.appendChild(document.createTextNode("reference (" + DATA.colours.reference + ")"));
    node.appendChild(el("span", {"class": "swatch pred"}));
    node.appendChild(document.createTextNode("prediction (" + DATA.colours.prediction + ")"));
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
    a.appendChild(el("img", {src: "thumbs/" + c.f + ".png", loading: "lazy", decoding: "async",
                             width: c.tw, height: c.th, alt: "overlay of " + c.id}));
    td.appendChild(a);
    tr.appendChild(td);
    TABLE.slice(1).forEach(function (key) {
      var cell = el("td", {"class": COLUMNS[key][1] === "num" ? "num" : "", "data-key": key});
      if (key === "id") cell.appendChild(el("a", {href: caseLink(c, p)}, c.id));
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
    document.getElementById("filters").addEventListener("submit", function (e) { e.preventDefault(); });
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
    update(false);
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
  }

  // The case asked for in the URL, within the list as sorted and filtered there (all cases if filtered out).
  function locate(all, p, id) {
    var list = select(all, p);
    var index = list.findIndex(function (c) { return c.id === id; });
    if (index < 0) { list = all; index = all.findIndex(function (c) { return c.id === id; }); }
    return {list: list, index: index, c: index >= 0 ? list[index] : null};
  }

  function CaseView(where, listQ, shown) {
    var c = where.c;
    this.where = where;
    this.listQ = listQ;
    this.files = {image: c.img ? c.f + "-image.png" : null, ref: c.ref ? c.f + "-ref.png" : null,
                  pred: c.f + "-pred.png", prob: c.prob ? c.f + "-prob.png" : null};
    this.state = {};
    var self = this, buttons = document.getElementById("layer-buttons");
    LAYERS.forEach(function (l) {
      var img = document.getElementById("layer-" + l[0]), b = el("button", {type: "button", id: "button-" + l[0]});
      var file = self.files[l[0]];
      b.appendChild(el("kbd", {}, l[1]));
      b.appendChild(document.createTextNode(" " + l[2] + (file ? "" : " (none)")));
      if (file) { img.src = "full/" + file; img.width = c.w; img.height = c.h; }
      else { img.setAttribute("data-missing", "1"); b.disabled = true; }
      self.state[l[0]] = !!file && shown.indexOf(l[1]) >= 0;
      b.addEventListener("click", function () { self.toggle(l[0]); });
      buttons.appendChild(b);
    });
  }

  CaseView.prototype.show = function () {
    var state = this.state;
    return LAYERS.filter(function (l) { return state[l[0]]; }).map(function (l) { return l[1]; }).join("");
  };

  CaseView.prototype.link = function (step) {
    var w = this.where, to = w.list[w.index + step];
    if (!to) return null;
    return "case.html?id=" + encodeURIComponent(to.id) + (this.listQ ? "&" + this.listQ : "") + "&show=" + this.show();
  };

  CaseView.prototype.apply = function () {
    var state = this.state;
    LAYERS.forEach(function (l) {
      document.getElementById("layer-" + l[0]).setAttribute("data-on", state[l[0]] ? "1" : "0");
      document.getElementById("button-" + l[0]).setAttribute("aria-pressed", state[l[0]] ? "true" : "false");
    });
    [["prev", -1], ["next", 1]].forEach(function (pair) {
      var a = document.getElementById(pair[0]), href = this.link(pair[1]);
      if (href) a.href = href; else a.removeAttribute("href");
    }, this);
    setUrl("id=" + encodeURIComponent(this.where.c.id) + (this.listQ ? "&" + this.listQ : "") + "&show=" + this.show());
  };

  CaseView.prototype.toggle = function (layer) {
    if (!this.files[layer]) return;
    this.state[layer] = !this.state[layer];
    this.apply();
  };

  CaseView.prototype.fit = function (on) {
    var c = this.where.c, stage = document.getElementById("stage");
    stage.classList.toggle("fit", on);
    stage.style.width = on ? "min(100%, calc((100vh - 6em) * " + (c.w / c.h) + "))" : c.w + "px";
  };

  CaseView.prototype.onKey = function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey || /^(INPUT|SELECT|TEXTAREA)$/.test(e.target.tagName)) return;
    var key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    var layer = LAYERS.filter(function (l) { return l[1] === key; })[0];
    var step = {ArrowRight: 1, ArrowLeft: -1}[key];
    if (layer) this.toggle(layer[0]);
    else if (key === "f") this.fit(!document.getElementById("stage").classList.contains("fit"));
    else if (step && this.link(step)) location.href = this.link(step);
    else if (key === "Escape") location.href = document.getElementById("back").href;
    else return;
    e.preventDefault();
  };

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
    document.getElementById("stage").style.aspectRatio = c.w + " / " + c.h;
    document.getElementById("size-note").textContent = "Shown at " + c.w + " × " + c.h + " px; layers larger than " +
      DATA.max_side + " px on their long side are shrunk to it.";
    legend(document.getElementById("legend"));
    renderFacts(c);
    var view = new CaseView(where, listQ, (q.get("show") === null ? "irpm" : q.get("show")).split(""));
    view.fit(true);
    view.apply();
    document.addEventListener("keydown", function (e) { view.onKey(e); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!DATA) {
      document.body.insertBefore(el("p", {"class": "warning"}, "data.js is missing: write the site again with `mammoseg view`."), document.body.firstChild);
      return;
    }
    if (document.body.getAttribute("data-page") === "case") renderCase();
    else renderIndex();
  });
})();
