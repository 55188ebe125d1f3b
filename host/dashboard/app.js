// Opal dashboard: wires the store, the socket and the views together, and
// routes between the operations view (`#/`) and one operation
// (`#/operations/<id>`). Everything it shows comes from the public API.

import { api } from "./api.js";
import { initSignOut } from "./auth.js";
import { DetailView } from "./detail.js";
import { byId, setText } from "./dom.js";
import { opTitle } from "./format.js";
import { StartForm } from "./form.js";
import { OperationsList } from "./list.js";
import { QueueSwitch } from "./queue.js";
import { LiveSocket } from "./socket.js";
import { Store } from "./store.js";
import { SystemPanel } from "./system.js";
import { toast } from "./toasts.js";

const store = new Store();
const list = new OperationsList(store);
const form = new StartForm(store);
const system = new SystemPanel(store);
new QueueSwitch(store);
const socket = new LiveSocket({
  // Batched frames: a burst of events arrives as one frame, one message per line.
  url: `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/api/v1/ws?batch=true`,
  onMessage: (message) => store.apply(message),
  onState: showConnection,
});
const detail = new DetailView(store, socket);

// Redraw at most once a frame however many messages arrive (a resume can
// replay thousands); hidden tabs get no frames, so they use a timer.
let drawQueued = false;
function draw() {
  if (drawQueued) return;
  drawQueued = true;
  const run = () => {
    drawQueued = false;
    const now = Date.now();
    list.render(now);
    form.refresh();
    detail.render(now);
  };
  if (document.visibilityState === "visible") requestAnimationFrame(run);
  else setTimeout(run, 100);
}
store.on("ops", draw);
store.on("caller", draw);

store.on("terminal", (frame) => {
  const op = frame.operation;
  // A workflow's steps end inside their run's row; the run's own end is the news.
  if (op.parent) return;
  const kind = frame.event.split(".")[1];
  const text = kind === "failed" ? op.error?.message ?? op.message : op.message;
  toast({ kind, title: `${opTitle(op)} ${kind}`, text, href: `#/operations/${op.id}` });
});

const CONNECTION_LABEL = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", offline: "Offline" };

function showConnection(state, { retryAt }) {
  const badge = byId("connection");
  badge.dataset.state = state;
  setText(byId("connection-label"), CONNECTION_LABEL[state] ?? state);
  badge.title = retryAt && state !== "live" ? `Next attempt at ${new Date(retryAt).toLocaleTimeString()}` : "";
  byId("connection-retry").hidden = state !== "offline";
  if (state === "live") {
    // A reconnect may be to a restarted (even upgraded) server.
    loadPlugins();
    system.refreshServer();
  }
}
byId("connection-retry").addEventListener("click", () => socket.retryNow());

// Plugins can come and go while the server runs; the system figures count
// them, so a change in that count is the cue to read the list again.
let pluginCount = null;
store.on("system", (status) => {
  if (typeof status?.plugins !== "number") return;
  if (pluginCount !== null && status.plugins !== pluginCount) loadPlugins();
  pluginCount = status.plugins;
});

async function loadPlugins() {
  const reply = await api.plugins();
  if (!reply.ok) return;
  store.setPlugins(reply.body.plugins);
  form.setPlugins(reply.body.plugins);
  draw();
}

function route() {
  const match = /^#\/operations\/([^/]+)$/.exec(location.hash);
  const main = byId("main-view");
  const view = byId("detail-view");
  if (match) {
    main.hidden = true;
    view.hidden = false;
    const id = decodeURIComponent(match[1]);
    detail.show(id);
    document.title = `Opal · ${id}`;
    view.querySelector("h1")?.setAttribute("tabindex", "-1");
    view.querySelector("h1")?.focus();
  } else {
    detail.hide();
    view.hidden = true;
    main.hidden = false;
    document.title = "Opal · Operations";
  }
  draw();
}
window.addEventListener("hashchange", route);

setInterval(() => {
  const now = Date.now();
  list.tick(now);
  detail.tick(now);
  system.tick(now);
}, 1000);

initSignOut();
loadPlugins();
route();
socket.start();

// For people debugging in the console; the page itself never reads it.
window.opalDashboard = { store, socket };
