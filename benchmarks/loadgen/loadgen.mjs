// The benchmark load generator: one Node process, raw TCP sockets, no dependencies.
//
//   node benchmarks/loadgen/loadgen.mjs '<job as JSON>'   -> one JSON line on stdout
//
// Why hand-rolled instead of the `ws` package: the generator must not be the bottleneck
// on a 2-core machine while one server core pushes up to ~200k messages/s. This client
// parses server frames in place (no per-message Buffer, no UTF-8 validation, no events)
// and counts publications by scanning for the payload's "bt": marker, which also works
// when a server coalesces several messages into one frame. Its own CPU use is reported
// with every result so that this claim can be checked.
//
// Protocols: "centrifuge" (client protocol v2, JSON), "socketio" (Engine.IO v4 over a
// direct WebSocket, Socket.IO v5 packets) and "simple" (the floors and Channels:
// {"op":"sub"|"pub","ch":..,"data":..}).

import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import { performance } from "node:perf_hooks";
import readline from "node:readline";

const job = JSON.parse(process.argv[2]);
const CLK_TCK = job.clk_tck || 100;
const MARK = Buffer.from('"bt":');
const PING_LINE = Buffer.from("\n{}\n"); // a centrifuge ping between two lines of a frame
const PING_END = Buffer.from("\n{}"); // ... or as its last line
const READ_BUF = Buffer.allocUnsafe(1 << 18);
const nowUs = () => Math.round(performance.now() * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ /proc readings

function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime + stime
}

function rssBytes(pid) {
  const statm = fs.readFileSync(`/proc/${pid}/statm`, "latin1").split(" ");
  return Number(statm[1]) * 4096;
}

function cpuAll() {
  const out = {};
  for (const [name, pid] of Object.entries(job.pids || {})) out[name] = cpuSeconds(pid);
  return out;
}

function cpuDelta(a, b) {
  const out = {};
  for (const k of Object.keys(a)) out[k] = +(b[k] - a[k]).toFixed(3);
  return out;
}

// ------------------------------------------------------------------ frames

function maskedFrame(payload, opcode = 0x1) {
  const n = payload.length;
  const hlen = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(hlen + 4 + n);
  out[0] = 0x80 | opcode;
  if (n < 126) out[1] = 0x80 | n;
  else if (n < 65536) {
    out[1] = 0x80 | 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 0x80 | 127;
    out.writeBigUInt64BE(BigInt(n), 2);
  }
  const m0 = (Math.random() * 256) | 0;
  const m1 = (Math.random() * 256) | 0;
  const m2 = (Math.random() * 256) | 0;
  const m3 = (Math.random() * 256) | 0;
  out[hlen] = m0;
  out[hlen + 1] = m1;
  out[hlen + 2] = m2;
  out[hlen + 3] = m3;
  const mask = [m0, m1, m2, m3];
  const base = hlen + 4;
  for (let i = 0; i < n; i++) out[base + i] = payload[i] ^ mask[i & 3];
  return out;
}

const textFrame = (s) => maskedFrame(Buffer.from(s));

// ------------------------------------------------------------------ counters

const stats = {
  delivered: 0, // publications received by subscribers (all phases)
  frames: 0, // data frames received by subscribers while counting
  lastUs: 0,
  errors: 0,
  closed: 0,
  firstError: "",
};
let target = Infinity;
let onTarget = null;
let latencies = null;
let latN = 0;
let latMs = null; // sweep: per delivery, when in its step (ms) the publication was sent
let latT0 = 0;
let latFirstUs = 0; // sweep: when the step's first delivery arrived

function noteError(msg) {
  stats.errors++;
  if (!stats.firstError) stats.firstError = String(msg).slice(0, 300);
}

function countPubs(conn, buf, s, e) {
  // every publication carries "bt":<microseconds>; several may share one frame. The
  // search runs on a view of this frame only: the read buffer holds stale bytes past e.
  const frame = buf.subarray(s, e);
  let n = 0;
  let i = frame.indexOf(MARK);
  while (i !== -1) {
    n++;
    if (latencies !== null) {
      let j = i + MARK.length;
      let v = 0;
      let c = frame[j];
      while (c >= 48 && c <= 57) {
        v = v * 10 + (c - 48);
        c = frame[++j];
      }
      if (latN < latencies.length) {
        // sweep: also the second of the step in which the publication was sent
        if (latMs !== null) {
          latMs[latN] = Math.max(0, Math.floor((v - latT0) / 1000));
          if (latFirstUs === 0) latFirstUs = nowUs();
        }
        latencies[latN++] = nowUs() - v;
      }
    }
    i = frame.indexOf(MARK, i + MARK.length);
  }
  if (n === 0) return false;
  conn.got += n;
  stats.frames++;
  stats.delivered += n;
  stats.lastUs = nowUs();
  if (stats.delivered >= target && onTarget !== null) {
    const f = onTarget;
    onTarget = null;
    f();
  }
  return true;
}

// ------------------------------------------------------------------ protocols

function subscribeCommands(conn) {
  return conn.channels.map((ch) => `{"id":${conn.nextId++},"subscribe":{"channel":"${ch}"}}`);
}

const protocols = {
  centrifuge: {
    path: "/connection/websocket",
    // Like centrifuge-js (5.7.4, `_transportOpen`): the connect command and the subscribe
    // commands of subscriptions made before connect() go out in one frame, one command
    // per line. When permessage-deflate is offered, compressed replies cannot be read
    // (`blind` counts frames), so the generator subscribes after the connect reply.
    open(conn) {
      conn.nextId = 1;
      const cmds = [`{"id":${conn.nextId++},"connect":{}}`];
      conn.subsSent = !job.deflate;
      if (conn.subsSent) cmds.push(...subscribeCommands(conn));
      conn.send(cmds.join("\n"));
    },
    setup(conn, text) {
      for (const line of text.split("\n")) {
        if (!line) continue;
        if (line === "{}") {
          conn.send("{}");
          continue;
        }
        const msg = JSON.parse(line);
        if (msg.error) throw new Error(`centrifuge error: ${line}`);
        if (msg.connect) {
          if (conn.channels.length === 0) conn.setReady();
          else if (!conn.subsSent) {
            conn.subsSent = true; // deflate offered but not agreed: replies are readable
            for (const cmd of subscribeCommands(conn)) conn.send(cmd);
          }
        } else if (msg.subscribe && ++conn.acks === conn.channels.length) conn.setReady();
      }
    },
    blind(conn) {
      // permessage-deflate: the first compressed frame is the connect reply
      if (!conn.connected) {
        conn.connected = true;
        if (conn.channels.length === 0) conn.setReady();
        else {
          // one frame per command: each reply is then one frame that can be counted
          conn.subsSent = true;
          for (const cmd of subscribeCommands(conn)) conn.send(cmd);
        }
      } else if (++conn.acks === conn.channels.length) conn.setReady();
    },
    fast(conn, buf, s, e) {
      if (countPubs(conn, buf, s, e)) {
        // a ping ("{}") coalesced with publications into one frame must be answered too
        const frame = buf.subarray(s, e);
        if (frame[0] === 0x7b && frame[1] === 0x7d && frame[2] === 0x0a) conn.send("{}");
        else if (frame.indexOf(PING_LINE) !== -1) conn.send("{}");
        else if (e - s >= 3 && frame.indexOf(PING_END, e - s - 3) !== -1) conn.send("{}");
        return;
      }
      const text = buf.toString("latin1", s, e);
      if (text === "{}" || text.startsWith("{}\n") || text.includes("\n{}")) conn.send("{}");
      else if (text.includes('"error"')) noteError(text);
    },
    publish(conn, ch, data) {
      return `{"id":${conn.nextId++},"publish":{"channel":"${ch}","data":${data}}}`;
    },
  },

  socketio: {
    path: "/socket.io/?EIO=4&transport=websocket",
    open() {},
    setup(conn, text) {
      if (text === "2") conn.send("3");
      else if (text[0] === "0") conn.send("40");
      else if (text.startsWith("40")) {
        if (conn.channels.length === 0) conn.setReady();
        let ack = 1;
        for (const ch of conn.channels) conn.send(`42${ack++}["sub","${ch}"]`);
      } else if (text.startsWith("43")) {
        if (++conn.acks === conn.channels.length) conn.setReady();
      } else if (text.startsWith("44") || text[0] === "1") throw new Error(`socketio: ${text}`);
    },
    fast(conn, buf, s, e) {
      if (countPubs(conn, buf, s, e)) return;
      if (e - s === 1 && buf[s] === 0x32) conn.send("3"); // Engine.IO ping
    },
    publish(conn, ch, data) {
      return `42["pub",{"ch":"${ch}","data":${data}}]`;
    },
  },

  simple: {
    path: "/ws",
    open(conn) {
      if (conn.channels.length === 0) conn.setReady();
      for (const ch of conn.channels) conn.send(`{"op":"sub","ch":"${ch}"}`);
    },
    setup(conn, text) {
      if (text.includes('"ok":"sub"') && ++conn.acks === conn.channels.length) conn.setReady();
    },
    blind(conn) {
      if (++conn.acks === conn.channels.length) conn.setReady();
    },
    fast(conn, buf, s, e) {
      countPubs(conn, buf, s, e);
    },
    publish(conn, ch, data) {
      return `{"op":"pub","ch":"${ch}","data":${data}}`;
    },
  },
};

const proto = protocols[job.proto];
if (!proto) throw new Error(`unknown proto ${job.proto}`);

// ------------------------------------------------------------------ connection

const all = [];
let finished = false;

class Conn {
  constructor(port, channels, localAddress) {
    this.channels = channels;
    this.acks = 0;
    this.got = 0;
    this.ready = false;
    this.upgraded = false;
    this.pending = null;
    this.connected = false;
    this.readyCb = null;
    this.failCb = null;
    this.key = crypto.randomBytes(16).toString("base64");
    // onread: every socket reads into one shared buffer and calls back directly,
    // without a Buffer per read or the stream machinery ('data' events)
    const sock = net.connect({
      host: job.host || "127.0.0.1",
      port,
      localAddress,
      onread: { buffer: READ_BUF, callback: (n, buf) => this.onData(buf, n) },
    });
    this.sock = sock;
    sock.setNoDelay(true);
    sock.on("connect", () => {
      const ext = job.deflate
        ? "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        : "";
      sock.write(
        `GET ${proto.path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\n` +
          `Sec-WebSocket-Version: 13\r\n${ext}\r\n`,
      );
    });
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => {
      if (!finished) {
        stats.closed++;
        this.fail(new Error("closed by server"));
      }
    });
    all.push(this);
  }

  send(text) {
    this.sock.write(textFrame(text));
  }

  setReady() {
    this.ready = true;
    if (this.readyCb) this.readyCb(this);
    this.readyCb = null;
    this.failCb = null;
  }

  fail(err) {
    if (finished) return;
    if (this.failCb) {
      const f = this.failCb;
      this.readyCb = null;
      this.failCb = null;
      f(err);
    } else noteError(err.message);
  }

  onData(chunk, n) {
    // `chunk` is the shared read buffer: anything kept past this call must be copied
    let buf = chunk;
    let size = n;
    if (this.pending !== null) {
      buf = Buffer.concat([this.pending, chunk.subarray(0, n)]);
      size = buf.length;
    }
    let off = 0;
    if (!this.upgraded) {
      const end = buf.subarray(0, size).indexOf("\r\n\r\n");
      if (end < 0) {
        this.pending = Buffer.from(buf.subarray(0, size));
        return;
      }
      const head = buf.toString("latin1", 0, end);
      if (!head.startsWith("HTTP/1.1 101")) {
        this.pending = null;
        this.fail(new Error(`handshake refused: ${head.split("\r\n")[0]}`));
        this.sock.destroy();
        return;
      }
      const want = crypto
        .createHash("sha1")
        .update(`${this.key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
        .digest("base64");
      if (!head.toLowerCase().includes(`sec-websocket-accept: ${want.toLowerCase()}`)) {
        this.fail(new Error("bad Sec-WebSocket-Accept"));
        this.sock.destroy();
        return;
      }
      this.upgraded = true;
      off = end + 4;
      try {
        proto.open(this);
      } catch (err) {
        this.fail(err);
      }
    }
    while (size - off >= 2) {
      const b0 = buf[off];
      const b1 = buf[off + 1];
      let len = b1 & 0x7f;
      let hdr = 2;
      if (len === 126) {
        if (size - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        hdr = 4;
      } else if (len === 127) {
        if (size - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        hdr = 10;
      }
      if (size - off < hdr + len) break;
      const s = off + hdr;
      const e = s + len;
      off = e;
      this.onFrame(b0, buf, s, e);
    }
    this.pending = off < size ? Buffer.from(buf.subarray(off, size)) : null;
  }

  onFrame(b0, buf, s, e) {
    const opcode = b0 & 0x0f;
    if (opcode === 0x9) {
      this.sock.write(maskedFrame(buf.subarray(s, e), 0xa));
      return;
    }
    if (opcode === 0x8) {
      if (!finished) {
        const code = e - s >= 2 ? buf.readUInt16BE(s) : 0;
        this.fail(new Error(`close frame ${code} ${buf.toString("utf8", s + 2, e)}`));
      }
      return;
    }
    if (opcode === 0xa) return;
    try {
      if (this.ready) proto.fast(this, buf, s, e);
      else if (b0 & 0x40) proto.blind(this);
      else if (!countPubs(this, buf, s, e)) proto.setup(this, buf.toString("utf8", s, e));
    } catch (err) {
      this.fail(err);
    }
  }
}

let srcIndex = 0;
function nextSource() {
  // spread connections over 32 loopback source addresses (ephemeral ports, TIME_WAIT)
  const a = job.src_base || 1;
  return `127.${a}.0.${1 + (srcIndex++ % 32)}`;
}

function openConn(port, channels, timeoutMs = 20000) {
  return new Promise((resolve, reject) => {
    const conn = new Conn(port, channels, nextSource());
    const timer = setTimeout(() => {
      conn.readyCb = null;
      conn.failCb = null;
      conn.sock.destroy();
      reject(new Error("connect+subscribe timed out"));
    }, timeoutMs);
    conn.readyCb = (c) => {
      clearTimeout(timer);
      resolve(c);
    };
    conn.failCb = (err) => {
      clearTimeout(timer);
      conn.sock.destroy();
      reject(err);
    };
  });
}

// Connect `n` clients with at most `window` handshakes in flight; each subscribes to
// channelsOf(i). No new handshake starts after `job.connect_cap_s` (slow peers): then
// `capped` is true and fewer clients are returned. Rate = ready clients / seconds.
async function connectMany(n, channelsOf, port = job.port) {
  const window = job.window || 100;
  const capAt = performance.now() + (job.connect_cap_s || 1e6) * 1000;
  const conns = [];
  let next = 0;
  let failures = 0;
  let capped = false;
  const t0 = performance.now();
  async function worker() {
    while (next < n) {
      if (performance.now() > capAt) {
        capped = true;
        return;
      }
      const i = next++;
      try {
        conns.push(await openConn(port, channelsOf(i)));
      } catch (err) {
        failures++;
        noteError(err.message);
        if (failures > Math.max(20, n / 100)) throw new Error(`too many failed connects: ${err.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(window, n) }, worker));
  const secs = (performance.now() - t0) / 1000;
  return { conns, failures, secs, rate: conns.length / secs, capped };
}

async function connectAll(n, channelsOf, port = job.port) {
  const c = await connectMany(n, channelsOf, port);
  if (c.capped) {
    throw new Error(`only ${c.conns.length}/${n} clients connected within ${job.connect_cap_s} s`);
  }
  return c;
}

// ------------------------------------------------------------------ publishing

let seq = 0;
const PAD = "x".repeat(job.pad || 32);
const payload = () => `{"bt":${nowUs()},"seq":${seq++},"text":"${PAD}"}`;

function waitDelivered(total, deadlineMs) {
  target = total;
  if (stats.delivered >= total) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      onTarget = null;
      resolve(false);
    }, deadlineMs);
    onTarget = () => {
      clearTimeout(timer);
      resolve(true);
    };
  });
}

// Send `count` publications into channelOf(i) as one write; wait for `expect` deliveries.
async function burst(pub, count, channelOf, expect, deadlineMs) {
  const base = stats.delivered;
  const frames = [];
  for (let i = 0; i < count; i++) frames.push(textFrame(proto.publish(pub, channelOf(i), payload())));
  const cpu0 = cpuAll();
  const lg0 = process.cpuUsage();
  const frames0 = stats.frames;
  const t0 = nowUs();
  stats.lastUs = t0;
  pub.sock.write(Buffer.concat(frames));
  const complete = await waitDelivered(base + expect, deadlineMs);
  const t1 = nowUs();
  const cpu1 = cpuAll();
  const lg = process.cpuUsage(lg0);
  const delivered = stats.delivered - base;
  const spanUs = Math.max(1, (complete ? stats.lastUs : t1) - t0);
  const cpu = cpuDelta(cpu0, cpu1);
  return {
    publications: count,
    expected: expect,
    delivered,
    complete,
    seconds: +(spanUs / 1e6).toFixed(4),
    rate: Math.round(delivered / (spanUs / 1e6)),
    cpu_s: cpu,
    cpu_us_per_delivery: Object.fromEntries(
      Object.entries(cpu).map(([k, v]) => [k, delivered ? +((v * 1e6) / delivered).toFixed(2) : null]),
    ),
    frames: stats.frames - frames0,
    loadgen_cpu_share: +((lg.user + lg.system) / Math.max(1, t1 - t0)).toFixed(3),
  };
}

// A few publications that every subscriber must receive before measuring. A peer that
// loses up to 1% of them (Channels' Redis layer does, now and then) is still measured.
async function warmup(pub, subs, channel) {
  const n = job.warmup ?? 2;
  if (n <= 0) return null;
  const r = await burst(pub, n, () => channel, n * subs, Math.max(20, job.deadline_s || 0) * 1000);
  if (r.delivered < 0.99 * r.expected) {
    throw new Error(`warm-up incomplete: ${r.delivered}/${r.expected} in ${r.seconds} s`);
  }
  await sleep(r.complete ? 300 : 1000);
  return r.complete ? null : `warm-up lost ${r.expected - r.delivered} of ${r.expected}`;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

// ------------------------------------------------------------------ scenarios

async function scenarioBurst() {
  const ch = job.channel || "bench";
  const c = await connectAll(job.subs, () => [ch]);
  const pub = await openConn(job.pub_port || job.port, []);
  const warmNote = await warmup(pub, c.conns.length, ch);
  // Repeat the burst on the same connections (best run reported; all rates listed) while
  // the runs are short: one run is noisy on a shared 2-core machine.
  const runs = [];
  const began = performance.now();
  for (let k = 0; k < (job.repeats || 1); k++) {
    const expect = job.pubs * c.conns.length;
    runs.push(await burst(pub, job.pubs, () => ch, expect, job.deadline_s * 1000));
    const last = runs[runs.length - 1];
    if (!last.complete || performance.now() - began > (job.repeat_budget_s || 0) * 1000) break;
    await sleep(300);
  }
  const r = runs.reduce((a, b) => (b.rate > a.rate ? b : a));
  r.runs = runs.map((x) => x.rate);
  const got = c.conns.map((x) => x.got);
  let gc = null; // a server started with --gc-stats: its collector, all clients still open
  if (job.gc_stats) {
    await snapshotStep(`${job.gc_stats}.trigger`, `${job.gc_stats}.json`, "");
    gc = JSON.parse(fs.readFileSync(`${job.gc_stats}.json`, "utf8"));
  }
  return {
    gc,
    rss_mb: job.pids && job.pids.server ? +(rssBytes(job.pids.server) / 2 ** 20).toFixed(1) : null,
    subscribers: c.conns.length,
    connect_failures: c.failures,
    connect_rate: Math.round(c.rate),
    connect_seconds: +c.secs.toFixed(3),
    ...r,
    min_per_sub: Math.min(...got),
    expected_per_sub: (job.warmup ?? 2) + job.pubs * r.runs.length,
    warmup_note: warmNote,
  };
}

async function scenarioSteady() {
  const ch = job.channel || "bench";
  const c = await connectAll(job.subs, () => [ch]);
  const pub = await openConn(job.port, []);
  await warmup(pub, c.conns.length, ch);
  const total = job.rate * job.duration_s;
  latencies = new Float64Array(total * c.conns.length);
  latN = 0;
  const base = stats.delivered;
  const cpu0 = cpuAll();
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / job.rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    pub.send(proto.publish(pub, ch, payload()));
  }
  const complete = await waitDelivered(base + total * c.conns.length, job.drain_s * 1000);
  const elapsed = (performance.now() - start) / 1000;
  const cpu = cpuDelta(cpu0, cpuAll());
  const lat = Array.from(latencies.subarray(0, latN)).sort((a, b) => a - b);
  const ms = (v) => (v === null ? null : +(v / 1000).toFixed(3));
  return {
    subscribers: c.conns.length,
    rate_pubs: job.rate,
    target_deliveries_per_s: job.rate * c.conns.length,
    publications: total,
    expected: total * c.conns.length,
    delivered: stats.delivered - base,
    complete,
    seconds: +elapsed.toFixed(3),
    p50_ms: ms(percentile(lat, 50)),
    p99_ms: ms(percentile(lat, 99)),
    max_ms: ms(lat.length ? lat[lat.length - 1] : null),
    cpu_s: cpu,
  };
}

async function scenarioChannels() {
  const n = job.subs;
  const c = await connectAll(n, (i) => [`c${i}`, "shared"]);
  const pub = await openConn(job.port, []);
  await warmup(pub, c.conns.length, "shared");
  const unicast = await burst(pub, n, (i) => `c${i}`, c.conns.length, job.deadline_s * 1000);
  await sleep(300);
  const shared = await burst(
    pub,
    job.pubs,
    () => "shared",
    job.pubs * c.conns.length,
    job.deadline_s * 1000,
  );
  return {
    subscribers: c.conns.length,
    connect_failures: c.failures,
    connect_rate: Math.round(c.rate),
    unicast,
    shared,
  };
}

// Ask a server started with --tracemalloc for a snapshot and wait for it (memtrace.py).
async function snapshotStep(trigger, done, content) {
  fs.writeFileSync(trigger, content);
  const until = performance.now() + 120000;
  while (!fs.existsSync(done)) {
    if (performance.now() > until) throw new Error(`no ${done}`);
    await sleep(200);
  }
}

async function scenarioIdle() {
  const pid = job.pids.server;
  const ch = job.channel || "idle";
  const warm = job.warm || 100;
  const w = await connectMany(warm, () => [ch]);
  await sleep(job.settle_s * 1000);
  if (job.snapshot) await snapshotStep(`${job.snapshot}.base-trigger`, `${job.snapshot}.base-done`, "");
  const rss0 = rssBytes(pid);
  const points = [];
  let have = w.conns.length;
  let rate = null;
  let capped = false;
  for (const step of job.steps) {
    const c = await connectMany(step - have, () => [ch]);
    if (rate === null) rate = Math.round(c.rate);
    have += c.conns.length;
    await sleep(job.settle_s * 1000);
    const rss = rssBytes(pid);
    points.push({
      clients: have,
      rss_mb: +(rss / 2 ** 20).toFixed(1),
      kb_per_client: +((rss - rss0) / 1024 / (have - w.conns.length)).toFixed(2),
    });
    if (c.capped) {
      capped = true; // a slow peer: report what it reached in the time allowed
      break;
    }
  }
  let trace = null;
  if (job.snapshot) {
    const added = String(have - w.conns.length);
    await snapshotStep(`${job.snapshot}.final-trigger`, `${job.snapshot}.json`, added);
    trace = JSON.parse(fs.readFileSync(`${job.snapshot}.json`, "utf8"));
  }
  const baseline_mb = +(rss0 / 2 ** 20).toFixed(1);
  return { baseline_mb, warm, connect_rate: rate, points, capped, trace };
}

// The rate sweep, driven step by step by run.py over stdin/stdout. After connect and
// warm-up the generator prints {"ready":true,...}; then for each line {"rate_pubs":x} on
// stdin it runs one step and prints its figures as one line; {"stop":true} ends it.
// A step: wait (bounded by recover_s) until every delivery of earlier steps arrived, pause
// settle_s, publish x publications/s for step_s seconds, then wait at most drain_s for
// the step's deliveries. Whether the step was sustained is decided in run.py.
async function scenarioSweep() {
  const ch = job.channel || "bench";
  const c = await connectAll(job.subs, () => [ch]);
  const pub = await openConn(job.port, []);
  await warmup(pub, c.conns.length, ch);
  const subs = c.conns.length;
  console.log(JSON.stringify({ ready: true, subscribers: subs, connect_rate: Math.round(c.rate) }));
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  let owed = stats.delivered; // deliveries expected so far, over all steps
  const ms = (v) => (v === null ? null : +(v / 1000).toFixed(3));
  for (;;) {
    const next = await lines.next();
    if (next.done) break;
    const cmd = JSON.parse(next.value);
    if (cmd.stop) break;
    const rate = cmd.rate_pubs;
    const stepS = cmd.step_s || job.step_s;
    const recovered = await waitDelivered(owed, job.recover_s * 1000);
    if (!recovered) {
      console.log(JSON.stringify({ step: true, rate_pubs: rate, recovered: false, backlog: owed - stats.delivered }));
      continue;
    }
    await sleep(job.settle_s * 1000);
    const total = Math.max(1, Math.round(rate * stepS));
    const expected = total * subs;
    latencies = new Float64Array(expected);
    latMs = new Uint32Array(expected);
    latN = 0;
    const base = stats.delivered;
    const errors0 = stats.errors;
    const frames0 = stats.frames;
    stats.firstError = ""; // this step's first error, if any
    const closed0 = stats.closed;
    const cpu0 = cpuAll();
    const lg0 = process.cpuUsage();
    const start = performance.now();
    latT0 = nowUs();
    latFirstUs = 0;
    for (let i = 0; i < total; i++) {
      const due = start + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 1) await sleep(wait);
      pub.send(proto.publish(pub, ch, payload()));
    }
    const sentS = (performance.now() - start) / 1000;
    owed = base + expected;
    const complete = await waitDelivered(owed, job.drain_s * 1000);
    const firstUs = latFirstUs;
    const endUs = nowUs();
    const lg = process.cpuUsage(lg0);
    const cpu = cpuDelta(cpu0, cpuAll());
    const delivered = stats.delivered - base;
    const lastUs = stats.lastUs;
    // p50 and p99 of the deliveries of the publications sent in each second of the step,
    // and in its first and second half
    const summary = (xs) => {
      xs.sort((a, b) => a - b);
      return { n: xs.length, p50_ms: ms(percentile(xs, 50)), p99_ms: ms(percentile(xs, 99)) };
    };
    const perSec = [];
    const secs = Math.ceil(total / rate);
    for (let k = 0; k < secs; k++) perSec.push([]);
    const halves = [[], []];
    const halfMs = (total / rate / 2) * 1000;
    for (let j = 0; j < latN; j++) {
      const k = Math.floor(latMs[j] / 1000);
      if (k < secs) perSec[k].push(latencies[j]);
      halves[latMs[j] < halfMs ? 0 : 1].push(latencies[j]);
    }
    const bySecond = perSec.map(summary);
    const lat = Array.from(latencies.subarray(0, latN)).sort((a, b) => a - b);
    const wallUs = Math.max(1, endUs - latT0);
    console.log(
      JSON.stringify({
        step: true,
        recovered: true,
        rate_pubs: rate,
        subscribers: subs,
        publications: total,
        expected,
        delivered,
        complete,
        send_s: +sentS.toFixed(3),
        step_s: stepS,
        wall_s: +(wallUs / 1e6).toFixed(3), // from the first send to the end of the drain
        // from the step's first delivery to its last
        first_last_s: delivered > 0 && firstUs > 0 ? +((lastUs - firstUs) / 1e6).toFixed(4) : null,
        p50_ms: ms(percentile(lat, 50)),
        p99_ms: ms(percentile(lat, 99)),
        max_ms: ms(lat.length ? lat[lat.length - 1] : null),
        by_second: bySecond,
        halves: halves.map(summary),
        frames: stats.frames - frames0, // frames that carried the step's publications
        errors: stats.errors - errors0,
        first_error: stats.firstError,
        closed: stats.closed - closed0,
        cpu_s: cpu,
        loadgen_cpu_share: +((lg.user + lg.system) / wallUs).toFixed(3),
      }),
    );
    latencies = null;
    latMs = null;
  }
  return { subscribers: subs, connect_rate: Math.round(c.rate) };
}

const scenarios = {
  burst: scenarioBurst,
  steady: scenarioSteady,
  sweep: scenarioSweep,
  channels: scenarioChannels,
  idle: scenarioIdle,
};

async function main() {
  const budget = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, error: "load generator budget exceeded", stats }));
    process.exit(2);
  }, (job.budget_s || 300) * 1000);
  let result;
  try {
    result = { ok: true, ...(await scenarios[job.scenario]()) };
  } catch (err) {
    result = { ok: false, error: String(err && err.message ? err.message : err) };
  }
  finished = true;
  clearTimeout(budget);
  result.errors = stats.errors;
  result.first_error = stats.firstError;
  console.log(JSON.stringify(result));
  for (const c of all) c.sock.destroy();
  process.exit(0);
}

main();
