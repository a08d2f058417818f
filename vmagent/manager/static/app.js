/* The manager dashboard: VM table with filters and paging, load plots, accounting, drain and halt. */
"use strict";

const state = { offset: 0, total: 0, selected: null, timer: null };
const $ = id => document.getElementById(id);

function token() { return sessionStorage.getItem("vmagent-admin-token") || ""; }

function say(text, ok) {
  const box = $("message");
  box.textContent = text;
  box.className = ok ? "ok" : "";
  box.hidden = !text;
}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers["Authorization"] = "Bearer " + token();
  if (opts.body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(opts.body);
  }
  const answer = await fetch("/api/v1" + path, opts);
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    if (answer.status === 401 || answer.status === 403) showLogin(true);
    throw new Error(`${answer.status}: ${data.detail || answer.statusText}`);
  }
  return data;
}

function showLogin(needed) {
  $("token").hidden = !needed;
  $("login").querySelector("button[type=submit]").hidden = !needed;
  $("logout").hidden = needed;
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "–" : text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function filters() {
  const params = new URLSearchParams();
  for (const key of ["state", "image", "running_pod", "ce", "vo", "q"]) {
    const value = $("f-" + key).value.trim();
    if (value) params.set(key, value);
  }
  params.set("limit", $("page-size").value);
  params.set("offset", String(state.offset));
  return params;
}

async function loadVms() {
  const data = await api("/vms?" + filters().toString());
  state.total = data.total;
  const body = $("vms").querySelector("tbody");
  body.replaceChildren();
  const now = Date.now() / 1000;
  for (const vm of data.vms) {
    const tr = document.createElement("tr");
    tr.dataset.vmId = vm.id;
    cell(tr, vm.id, "vm-id");
    const status = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = "state state-" + vm.state;
    badge.textContent = vm.state;
    badge.title = vm.state_reason || "";
    status.replaceChildren(badge);
    cell(tr, vm.image);
    cell(tr, vm.running_pod);
    cell(tr, vm.ce);
    cell(tr, vm.ip);
    cell(tr, vm.load1 === null ? null : vm.load1.toFixed(2), "num");
    cell(tr, fmtAge(vm.uptime), "num");
    cell(tr, `${vm.payloads_running} running, ${vm.payloads_done} done`, "num");
    cell(tr, vm.last_heartbeat ? fmtAge(now - vm.last_heartbeat) + " ago" : null);
    const actions = cell(tr, "");
    actions.replaceChildren(button("Drain", "drain", vm), button("Halt", "halt", vm));
    tr.addEventListener("click", () => showVm(vm.id));
    body.appendChild(tr);
  }
  const first = data.total ? state.offset + 1 : 0;
  $("page-info").textContent = `${first}–${state.offset + data.vms.length} of ${data.total}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + data.vms.length >= data.total;
  $("summary").textContent = `${data.total} VM${data.total === 1 ? "" : "s"} shown by the filter`;
}

function button(label, action, vm) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = action === "halt" ? "danger" : "";
  b.dataset.action = action;
  b.disabled = vm.state === "halted";
  b.addEventListener("click", event => { event.stopPropagation(); instruct(vm.id, action); });
  return b;
}

async function instruct(vmId, action) {
  const what = action === "halt" ? "stop its payloads and shut down" : "take no new payloads and finish the running ones";
  if (!window.confirm(`${action.toUpperCase()} ${vmId}?\n\nThe VM will ${what}.`)) return;
  try {
    const answer = await api(`/vms/${encodeURIComponent(vmId)}/instructions`,
                             { method: "POST", body: { action: action, reason: `${action} from the dashboard` } });
    say(`Queued ${action} for ${vmId} (instruction ${answer.id}); it travels with the VM's next heartbeat answer.`, true);
    await refresh();
  } catch (err) {
    say(`Could not queue ${action} for ${vmId}: ${err.message}`);
  }
}

async function showVm(vmId) {
  state.selected = vmId;
  const vm = await api(`/vms/${encodeURIComponent(vmId)}?history=500`);
  $("detail").hidden = false;
  $("detail-id").textContent = vmId;
  const load = vm.heartbeats.filter(h => h.load1 !== null).map(h => [h.at, h.load1]);
  const running = vm.heartbeats.filter(h => h.running !== null).map(h => [h.at, h.running]);
  window.vmPlot.lineChart($("vm-load"), [{ label: "load (1 min)", points: load },
                                         { label: "running payloads", points: running }],
                          { empty: "no heartbeat yet" });
  $("transitions").replaceChildren(...vm.transitions.map(t => li(
    `${new Date(t.at * 1000).toISOString()} ${t.from_state || "–"} → ${t.to_state}: ${t.reason}`)));
  $("instructions").replaceChildren(...vm.instructions.map(i => li(
    `#${i.id} ${i.action} ${i.acked_at ? "acknowledged" : i.delivered_at ? "delivered, not yet acknowledged" : "queued"}`
    + (i.reason ? ` (${i.reason})` : ""))));
}

function li(text) {
  const item = document.createElement("li");
  item.textContent = text;
  return item;
}

async function loadFleet() {
  const data = await api(`/fleet/load?bucket=60&since=${Date.now() / 1000 - 3600}`);
  window.vmPlot.lineChart($("fleet-load"), [
    { label: "mean load (1 min)", points: data.points.map(p => [p.t, p.load]) },
    { label: "heartbeating VMs", points: data.points.map(p => [p.t, p.vms]) }], { empty: "no heartbeat in the last hour" });
}

async function loadAccounting() {
  const group = $("group-by").value;
  const totals = await api(`/accounting?group_by=${group}`);
  window.vmPlot.barChart($("acc-core-hours"),
    totals.rows.map(r => ({ label: r[group], values: [r.core_hours, r.vm_core_hours] })),
    ["payload core-hours", "VM core-hours"], { empty: "no VM yet" });
  const now = Date.now() / 1000;
  const hourly = await api(`/accounting?group_by=${group}&bucket=3600&since=${Math.floor(now / 3600) * 3600 - 23 * 3600}`);
  const perHour = new Map();
  for (const r of hourly.rows) perHour.set(r.period, (perHour.get(r.period) || 0) + r.payloads);
  window.vmPlot.lineChart($("acc-over-time"), [{ label: "payloads finished",
    points: [...perHour.entries()].sort((a, b) => a[0] - b[0]) }], { empty: "no VM yet" });
  const columns = [group, "vms", "vm_core_hours", "payloads", "done", "failed", "killed", "lost", "core_hours", "cpu_hours"];
  const head = document.createElement("tr");
  columns.forEach(c => { const th = document.createElement("th"); th.textContent = c.replace(/_/g, " "); head.appendChild(th); });
  $("acc-table").querySelector("thead").replaceChildren(head);
  $("acc-table").querySelector("tbody").replaceChildren(...totals.rows.map(r => {
    const tr = document.createElement("tr");
    columns.forEach((c, i) => cell(tr, typeof r[c] === "number" && !Number.isInteger(r[c]) ? r[c].toFixed(2) : r[c],
                                   i ? "num" : ""));
    return tr;
  }));
}

async function refresh() {
  if (!token()) { showLogin(true); return; }
  try {
    await Promise.all([loadVms(), loadFleet(), loadAccounting()]);
    if (state.selected) await showVm(state.selected);
    showLogin(false);
    if ($("message").className !== "ok") say("");
  } catch (err) {
    say("Could not load: " + err.message);
  }
}

function start() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {  // a link with #token=... signs in once and leaves no token in the address bar
    sessionStorage.setItem("vmagent-admin-token", hash.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  $("login").addEventListener("submit", e => {
    e.preventDefault();
    sessionStorage.setItem("vmagent-admin-token", $("token").value.trim());
    $("token").value = "";
    refresh();
  });
  $("logout").addEventListener("click", () => { sessionStorage.removeItem("vmagent-admin-token"); location.reload(); });
  $("filters").addEventListener("submit", e => { e.preventDefault(); state.offset = 0; refresh(); });
  $("f-state").addEventListener("change", () => { state.offset = 0; refresh(); });
  $("page-size").addEventListener("change", () => { state.offset = 0; refresh(); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - Number($("page-size").value)); refresh(); });
  $("next").addEventListener("click", () => { state.offset += Number($("page-size").value); refresh(); });
  $("group-by").addEventListener("change", () => loadAccounting().catch(err => say(err.message)));
  $("detail-close").addEventListener("click", () => { state.selected = null; $("detail").hidden = true; });
  refresh();
  state.timer = setInterval(refresh, 10000);
}

document.addEventListener("DOMContentLoaded", start);
