// The dashboard: services with their counters, the activity tail, and the inbox, kept live by Server-Sent Events
// (/api/v1/events). Everything a message says is put on the page as text, never as HTML; a message's HTML is shown
// only inside a sandboxed frame, loaded from /api/v1/messages/ID/html (sanitised, under a no-script policy).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: "", open: null, query: "", seen: new Set(), first: true };

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}

async function api(path, options = {}) {
  const response = await fetch("/api/v1/" + path, options);
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response;
}

function who(address) {
  return address.Name ? `${address.Name} <${address.Address}>` : address.Address;
}

// -- views ----------------------------------------------------------------------------------------------------------
function show(view) {
  $("services-view").hidden = view !== "services";
  $("inbox-view").hidden = view !== "inbox";
  $("nav-services").classList.toggle("on", view === "services");
  $("nav-inbox").classList.toggle("on", view === "inbox");
  if (view === "inbox") $("unread").textContent = "";
}

function route() {
  show(location.hash === "#inbox" ? "inbox" : "services");
}

// -- the inbox ------------------------------------------------------------------------------------------------------
async function loadMessages() {
  const query = encodeURIComponent(state.query);
  const listing = await (await api(`messages?limit=200&query=${query}`)).json();
  const list = $("messages");
  list.replaceChildren();
  let fresh = 0;
  for (const m of listing.messages) {
    const item = el("li");
    item.dataset.id = m.ID;
    item.append(el("span", who(m.From), "from"), el("span", m.Subject || "(no subject)", "subject"),
                el("span", new Date(m.Date).toLocaleString(), "when"));
    if (m.ID === state.open) item.classList.add("on");
    item.addEventListener("click", () => openMessage(m.ID));
    list.append(item);
    if (!state.seen.has(m.ID)) { state.seen.add(m.ID); fresh += 1; }
  }
  if (!state.first && fresh && $("inbox-view").hidden) {
    $("unread").textContent = String((Number($("unread").textContent) || 0) + fresh);
  }
  state.first = false;
}

async function openMessage(id) {
  state.open = id;
  for (const item of $("messages").children) item.classList.toggle("on", item.dataset.id === id);
  const m = await (await api(`messages/${id}`)).json();
  $("message").hidden = false;
  $("m-subject").textContent = m.Subject || "(no subject)";
  $("m-from").textContent = who(m.From);
  $("m-to").textContent = m.To.map(who).join(", ");
  $("m-date").textContent = new Date(m.Date).toLocaleString();
  $("t-text").textContent = m.Text;
  $("html-frame").src = m.HTML ? `/api/v1/messages/${id}/html` : "about:blank";
  const headers = $("t-headers");
  headers.replaceChildren();
  for (const h of m.Headers) {
    const row = el("tr");
    row.append(el("th", h.Name), el("td", h.Value));
    headers.append(row);
  }
  $("t-raw").textContent = await (await api(`messages/${id}/raw`)).text();
  const attachments = $("attachments");
  attachments.replaceChildren();
  for (const a of m.Attachments) {
    const link = el("a", `${a.FileName} (${a.ContentType}, ${a.Size} bytes)`);
    link.href = `/api/v1/messages/${id}/part/${a.PartID}`;
    link.setAttribute("download", a.FileName);
    const item = el("li");
    item.append(link);
    attachments.append(item);
  }
  tab(m.HTML ? "html" : "text");
}

function tab(name) {
  for (const button of document.querySelectorAll(".tabs [data-tab]")) {
    button.classList.toggle("on", button.dataset.tab === name);
  }
  for (const pane of document.querySelectorAll(".tab")) pane.hidden = pane.id !== `t-${name}`;
}

async function remove(path) {
  await api(path, { method: "POST", headers: { "X-Sockhop-Token": state.token } });
}

// -- services and activity ------------------------------------------------------------------------------------------
function sparkline(values) {
  const canvas = el("canvas");
  canvas.width = 160;
  canvas.height = 28;
  const g = canvas.getContext("2d");
  const top = Math.max(1, ...values);
  g.strokeStyle = "#2f6fde";
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 2 - (v / top) * (canvas.height - 4);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
  return canvas;
}

async function loadServices() {
  showServices(await (await api("services")).json());
}

function showServices(services) {
  const body = $("services").tBodies[0];
  body.replaceChildren();
  for (const s of services.services) {
    const row = el("tr");
    const results = Object.entries(s.results).map(([k, v]) => `${k}: ${v}`).join(", ") || "-";
    const chart = el("td");
    chart.append(sparkline(s.history));
    row.append(el("td", s.name), el("td", s.listeners.join("\n")), el("td", s.model), el("td", results), chart);
    body.append(row);
  }
}

function tail(text) {
  const box = $("tail");
  box.textContent += text + "\n";
  const lines = box.textContent.split("\n");
  if (lines.length > 500) box.textContent = lines.slice(-500).join("\n");
  box.scrollTop = box.scrollHeight;
}

// -- live -----------------------------------------------------------------------------------------------------------
function live() {
  const events = new EventSource("/api/v1/events");
  events.addEventListener("open", () => { $("live").textContent = "live"; $("live").classList.add("on"); });
  events.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").classList.remove("on"); });
  events.addEventListener("mail", () => loadMessages());
  events.addEventListener("stats", (event) => showServices(JSON.parse(event.data)));
  events.addEventListener("log", (event) => tail(event.data));
}

async function start() {
  state.token = (await (await api("token")).json()).token;
  window.addEventListener("hashchange", route);
  route();
  let timer = null;
  $("search").addEventListener("input", (event) => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.query = event.target.value; loadMessages(); }, 150);
  });
  for (const button of document.querySelectorAll(".tabs [data-tab]")) {
    button.addEventListener("click", () => tab(button.dataset.tab));
  }
  $("remote-images").addEventListener("click", () => {
    if (state.open) $("html-frame").src = `/api/v1/messages/${state.open}/html?remote=1`;
  });
  $("delete-one").addEventListener("click", async () => {
    if (!state.open) return;
    await remove(`messages/${state.open}/delete`);
    state.open = null;
    $("message").hidden = true;
    await loadMessages();
  });
  $("delete-all").addEventListener("click", async () => {
    if (!confirm("Delete every message?")) return;
    await remove("messages/delete");
    state.open = null;
    $("message").hidden = true;
    await loadMessages();
  });
  await Promise.all([loadMessages(), loadServices()]);
  live();
}

start();
