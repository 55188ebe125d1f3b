// The socket.io baseline for the fan-out benchmark (host/benches/fanout.rs):
// the job the seeds' managers do, done their way. POST /api/v1/operations
// starts a simulated operation that emits `created`, `started`, one progress
// event per step (debounced like the seeds, window from PROGRESS_WINDOW_MS)
// and `completed` to every connected socket, each event carrying the whole
// operation, as Opal's frames do. Prints `listening on http://ADDR` like opal.
const http = require("http");
const { Server } = require("socket.io");

const window_ms = Number(process.env.PROGRESS_WINDOW_MS || 500);
let seq = 0;
let next_id = 0;

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/api/v1/operations") {
    res.writeHead(404).end();
    return;
  }
  let body = "";
  req.on("data", (chunk) => (body += chunk));
  req.on("end", () => {
    const request = JSON.parse(body);
    const op = {
      id: String(++next_id).padStart(26, "0"), type: request.type, target: request.target,
      params: request.params, status: "pending", progress: 0, message: "queued", details: {},
    };
    res.writeHead(202, { "content-type": "application/json" }).end(JSON.stringify(op));
    run(op, request.params.steps, request.params.step_ms);
  });
});

const io = new Server(server, { serveClient: false, perMessageDeflate: false });
io.on("connection", (socket) => socket.emit("hello", { seq }));

function emit(kind, op) {
  io.emit("event", { type: "event", seq: ++seq, event: kind, at: new Date().toISOString(), operation: op });
}

function run(op, steps, step_ms) {
  emit("operation.created", op);
  op.status = "running";
  emit("operation.started", op);
  let step = 0;
  let last_emit = 0;
  let trailing = null;
  const tick = setInterval(() => {
    step += 1;
    op.progress = Math.floor((step * 100) / steps);
    op.message = `step ${step} of ${steps}`;
    const now = Date.now();
    if (step === steps) {
      clearInterval(tick);
      clearTimeout(trailing);
      op.status = "completed";
      emit("operation.completed", op);
    } else if (now - last_emit >= window_ms) {
      last_emit = now;
      emit("operation.progress", op);
    } else if (!trailing) {
      trailing = setTimeout(() => {
        trailing = null;
        last_emit = Date.now();
        if (op.status === "running") emit("operation.progress", op);
      }, window_ms - (now - last_emit));
    }
  }, step_ms);
}

server.listen(0, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}`));
