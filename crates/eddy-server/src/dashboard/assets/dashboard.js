// eddy's dashboard: the workspace switcher, and the segment builder with its live size.
// Pages work without this script; it only adds what needs a live connection.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function setupWorkspaceSwitch() {
  const select = document.querySelector("[data-switch-workspace]");
  if (!select) return;
  select.addEventListener("change", () => {
    window.location.href = "/dashboard/" + encodeURIComponent(select.value);
  });
}

const ATTRIBUTE_OPS = [
  "equals", "not_equals", "greater_than", "less_than", "at_least", "at_most", "exists",
  "not_exists", "contains", "matches_regex", "includes_value", "before", "after",
  "more_than_days_ago", "less_than_days_ago",
];
const VALUELESS = ["exists", "not_exists"];
const NUMERIC = ["greater_than", "less_than", "at_least", "at_most", "more_than_days_ago", "less_than_days_ago"];
const COUNT_OPS = ["count_at_least", "count_at_most"];
const KINDS = [["attribute", "Attribute"], ["event", "Custom event count"], ["purchase", "Purchase count"], ["cohort", "Cohort"]];

let uniqueId = 0;
function field(labelText, control) {
  const wrap = document.createElement("div");
  const id = "b-" + (++uniqueId);
  control.id = id;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = labelText;
  wrap.append(label, control);
  return wrap;
}
function input(value, type) {
  const el = document.createElement("input");
  el.type = type || "text";
  el.value = value === undefined || value === null ? "" : String(value);
  return el;
}
function select(options, value) {
  const el = document.createElement("select");
  for (const option of options) {
    const [v, text] = Array.isArray(option) ? option : [option, option];
    const o = document.createElement("option");
    o.value = v;
    o.textContent = text;
    if (v === value) o.selected = true;
    el.append(o);
  }
  return el;
}

// A leaf of the filter language as a row, or null when it is not one the builder shows.
function rowFromLeaf(node) {
  let negate = false;
  if (node && node.not && Object.keys(node).length === 1) {
    negate = true;
    node = node.not;
  }
  if (!node || typeof node !== "object") return null;
  if ("event" in node || "purchase" in node) {
    const kind = "event" in node ? "event" : "purchase";
    return { kind, negate, name: node[kind] === null ? "" : node[kind], op: node.op, value: node.value, days: node.within_days };
  }
  if (typeof node.attribute === "string" && node.attribute.endsWith("_cohorts")) {
    return { kind: "cohort", negate, partner: node.attribute.slice(0, -"_cohorts".length), op: node.op, value: node.value };
  }
  if (typeof node.attribute === "string") {
    const type = typeof node.value === "number" ? "number" : typeof node.value === "boolean" ? "boolean" : "text";
    return { kind: "attribute", negate, name: node.attribute, op: node.op, value: node.value, type };
  }
  return null;
}

function leafFromRow(row) {
  let leaf;
  if (row.kind === "event" || row.kind === "purchase") {
    leaf = { op: row.op, value: Number(row.value) };
    leaf[row.kind] = row.kind === "purchase" && row.name === "" ? null : row.name;
    if (row.days !== "" && row.days !== undefined && row.days !== null) leaf.within_days = Number(row.days);
  } else if (row.kind === "cohort") {
    leaf = { attribute: row.partner + "_cohorts", op: row.op };
    if (!VALUELESS.includes(row.op)) leaf.value = row.value;
  } else {
    leaf = { attribute: row.name, op: row.op };
    if (!VALUELESS.includes(row.op)) {
      if (NUMERIC.includes(row.op) || row.type === "number") leaf.value = Number(row.value);
      else if (row.type === "boolean") leaf.value = row.value === "true";
      else leaf.value = row.value;
    }
  }
  return row.negate ? { not: leaf } : leaf;
}

function setupBuilder() {
  const root = document.querySelector("[data-builder]");
  const textarea = document.getElementById("filter");
  const output = document.getElementById("size");
  if (!root || !textarea || !output) return;
  const cohorts = JSON.parse(root.dataset.cohorts || "[]");
  const state = { combine: "and", rows: [] };
  let structured = true;

  function load() {
    let filter;
    try { filter = JSON.parse(textarea.value || '{"and": []}'); } catch (e) { structured = false; return; }
    let children = null;
    if (filter && Array.isArray(filter.and)) { state.combine = "and"; children = filter.and; }
    else if (filter && Array.isArray(filter.or)) { state.combine = "or"; children = filter.or; }
    else children = [filter];
    const rows = children.map(rowFromLeaf);
    structured = rows.every((r) => r !== null);
    if (structured) state.rows = rows;
  }

  function write() {
    const filter = {};
    filter[state.combine] = state.rows.map(leafFromRow);
    textarea.value = JSON.stringify(filter, null, 2);
    askSize();
  }

  function render() {
    root.textContent = "";
    const heading = document.createElement("h2");
    heading.textContent = "Filter";
    root.append(heading);
    if (!structured) {
      const note = document.createElement("p");
      note.className = "builder-note";
      note.textContent = "This filter nests groups; edit it as JSON below (the size follows).";
      root.append(note);
      return;
    }
    const combine = select([["and", "Users matching all of these"], ["or", "Users matching any of these"]], state.combine);
    combine.addEventListener("change", () => { state.combine = combine.value; write(); });
    root.append(field("Combine", combine));
    state.rows.forEach((row, i) => root.append(rowElement(row, i)));
    const add = document.createElement("button");
    add.type = "button";
    add.className = "secondary";
    add.textContent = "Add condition";
    add.addEventListener("click", () => {
      state.rows.push({ kind: "attribute", negate: false, name: "", op: "equals", value: "", type: "text" });
      render();
      write();
      const inputs = root.querySelectorAll(".builder-row");
      const last = inputs[inputs.length - 1];
      if (last) last.querySelector("select").focus();
    });
    root.append(add);
  }

  function rowElement(row, index) {
    const box = document.createElement("div");
    box.className = "builder-row";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Condition " + (index + 1));
    const kind = select(KINDS, row.kind);
    kind.addEventListener("change", () => {
      const fresh = { attribute: { name: "", op: "equals", value: "", type: "text" },
        event: { name: "", op: "count_at_least", value: 1, days: "" },
        purchase: { name: "", op: "count_at_least", value: 1, days: "" },
        cohort: { partner: cohorts.length ? cohorts[0].partner : "amplitude", op: "includes_value", value: cohorts.length ? cohorts[0].id : "" } }[kind.value];
      state.rows[index] = Object.assign({ kind: kind.value, negate: row.negate }, fresh);
      render();
      write();
    });
    box.append(field("Condition " + (index + 1), kind));
    const bind = (el, key, after) => {
      el.addEventListener("input", () => { row[key] = el.type === "checkbox" ? el.checked : el.value; if (after) after(); write(); });
      el.addEventListener("change", () => { row[key] = el.type === "checkbox" ? el.checked : el.value; if (after) after(); write(); });
      return el;
    };
    if (row.kind === "attribute") {
      box.append(field("Attribute", bind(input(row.name), "name")));
      const op = bind(select(ATTRIBUTE_OPS, row.op), "op", () => render());
      box.append(field("Operator", op));
      if (!VALUELESS.includes(row.op)) {
        box.append(field("Value", bind(input(row.value), "value")));
        if (!NUMERIC.includes(row.op)) box.append(field("Value type", bind(select([["text", "text"], ["number", "number"], ["boolean", "true/false"]], row.type || "text"), "type")));
      }
    } else if (row.kind === "event" || row.kind === "purchase") {
      box.append(field(row.kind === "event" ? "Event name" : "Product id (empty: any)", bind(input(row.name), "name")));
      box.append(field("Operator", bind(select(COUNT_OPS.map((o) => [o, o === "count_at_least" ? "at least" : "at most"]), row.op), "op")));
      box.append(field("Times", bind(input(row.value, "number"), "value")));
      box.append(field("Within days (1-30, empty: ever)", bind(input(row.days, "number"), "days")));
    } else {
      const options = cohorts.map((c) => [c.partner + "\u0000" + c.id, c.name + " (" + c.partner + ")"]);
      const current = row.partner + "\u0000" + row.value;
      if (!options.some(([v]) => v === current)) options.unshift([current, (row.value || "?") + " (" + row.partner + ")"]);
      const cohort = select(options, current);
      cohort.addEventListener("change", () => { [row.partner, row.value] = cohort.value.split("\u0000"); write(); });
      box.append(field("Cohort", cohort));
      box.append(field("Operator", bind(select([["includes_value", "is in the cohort"], ["exists", "is in any cohort of the partner"], ["not_exists", "is in no cohort of the partner"]], row.op), "op")));
    }
    const negate = input("", "checkbox");
    negate.checked = !!row.negate;
    bind(negate, "negate");
    const negateWrap = field("Not", negate);
    negateWrap.className = "check";
    box.append(negateWrap);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "secondary";
    remove.textContent = "Remove condition " + (index + 1);
    remove.addEventListener("click", () => { state.rows.splice(index, 1); render(); write(); });
    box.append(remove);
    return box;
  }

  let timer = null;
  let asked = 0;
  function askSize() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const question = ++asked;
      let filter;
      try { filter = JSON.parse(textarea.value); } catch (e) { output.textContent = "the filter is not JSON yet"; return; }
      // A group without conditions is a filter being started, not an invalid one.
      const group = filter && (filter.and || filter.or);
      if (Array.isArray(group) && group.length === 0) {
        output.textContent = "add a condition to see the size";
        output.dataset.size = "";
        return;
      }
      output.textContent = "…";
      try {
        const answer = await fetch(root.dataset.sizeUrl, {
          method: "POST",
          headers: { "content-type": "application/json", "x-csrf-token": csrfToken() },
          body: JSON.stringify({ filter }),
          credentials: "same-origin",
        });
        const body = await answer.json();
        if (question !== asked) return;
        output.textContent = answer.ok ? Number(body.size).toLocaleString("en-US") : (body.message || ("error " + answer.status));
        output.dataset.size = answer.ok ? String(body.size) : "";
      } catch (e) {
        if (question === asked) output.textContent = "could not ask for the size: " + e;
      }
    }, 150);
  }

  textarea.addEventListener("input", () => { load(); render(); askSize(); });
  load();
  render();
  askSize();
}

// A table of sends refreshes itself while one is going out, so progress shows live.
function followSends() {
  if (!document.querySelector("[data-live='sending']")) return;
  setTimeout(() => { if (!document.querySelector("textarea:focus, input:focus")) location.reload(); else followSends(); }, 2000);
}

document.addEventListener("DOMContentLoaded", () => {
  followSends();
  setupWorkspaceSwitch();
  setupBuilder();
});
