'use strict';
// weft bench, Node.js side: the same workloads as bench/weft_bench.c, with
// Node built-ins only (worker_threads, perf_hooks, Atomics).
//
//   node bench/node/bench.js <workload> [N]
//
// Each workload prints one or more machine-readable lines
//   RESULT <metric> <value> <unit>
// which bench/run.sh collects. Units ending in "/s" are higher-is-better,
// all others lower-is-better.
const {
  Worker, isMainThread, parentPort, workerData,
} = require('worker_threads');
const { performance } = require('perf_hooks');

const MiB = 1 << 20;

function result(metric, value, unit) {
  // Fixed-point with enough digits for both tiny (us) and big (msgs/s) values.
  const v = Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
  process.stdout.write(`RESULT ${metric} ${v} ${unit}\n`);
}

function spawn(role, extra) {
  return new Worker(__filename, { workerData: Object.assign({ role }, extra || {}) });
}

// ---------------------------------------------------------------- workers

function workerMain() {
  const role = workerData.role;
  if (role === 'echo') {
    // pingpong: echo every message back.
    parentPort.on('message', (m) => {
      if (m === 'stop') { parentPort.close(); return; }
      parentPort.postMessage(m);
    });
  } else if (role === 'count') {
    // throughput: count N messages, then reply once.
    const n = workerData.n;
    let seen = 0;
    parentPort.on('message', () => {
      if (++seen === n) { parentPort.postMessage(seen); parentPort.close(); }
    });
  } else if (role === 'fanin') {
    // fanin: on 'go', post the integers 0..n-1 to main, then wait for 'stop'.
    const n = workerData.n;
    parentPort.on('message', (m) => {
      if (m === 'stop') { parentPort.close(); return; }
      for (let i = 0; i < n; i++) parentPort.postMessage(i);
    });
  } else if (role === 'sink') {
    // copy1m: ack every payload with its length (a small int).
    parentPort.on('message', (m) => {
      if (m === 'stop') { parentPort.close(); return; }
      parentPort.postMessage(m.length);
    });
  } else if (role === 'bounce') {
    // transfer: send the ArrayBuffer straight back, transferred.
    parentPort.on('message', (m) => {
      if (m === 'stop') { parentPort.close(); return; }
      parentPort.postMessage(m, [m]);
    });
  } else if (role === 'atomics') {
    // atomics: slot 0 = ping sequence (main writes), slot 1 = pong (we write).
    const i32 = new Int32Array(workerData.sab);
    const n = workerData.n;
    parentPort.postMessage('ready');
    for (let i = 1; i <= n; i++) {
      while (Atomics.load(i32, 0) !== i) Atomics.wait(i32, 0, i - 1);
      Atomics.store(i32, 1, i);
      Atomics.notify(i32, 1);
    }
    parentPort.close();
  } else if (role === 'idle') {
    // idle: keep a port with a handler open, do nothing.
    parentPort.on('message', () => {});
  } else if (role === 'tick') {
    // tick: the same, plus a 1 ms interval that does nothing.
    parentPort.on('message', () => {});
    setInterval(() => {}, 1);
  } else {
    throw new Error('unknown role ' + role);
  }
}

// ---------------------------------------------------------------- main side

function pingpong(n) {
  return new Promise((resolve) => {
    const warm = Math.min(1000, n);
    const w = spawn('echo');
    const msg = [1, 'ping'];
    let got = 0;
    let t0 = 0;
    w.on('message', () => {
      got++;
      if (got === warm) t0 = performance.now();
      if (got < warm + n) { w.postMessage(msg); return; }
      const dt = (performance.now() - t0) / 1e3;
      result('pingpong.rtt', dt / n * 1e6, 'us');
      result('pingpong.rate', n / dt, 'rt/s');
      w.postMessage('stop');
    });
    w.on('exit', resolve);
    w.postMessage(msg);
  });
}

function throughput(n) {
  return new Promise((resolve) => {
    const w = spawn('count', { n });
    w.on('online', () => {
      const t0 = performance.now();
      w.on('message', (seen) => {
        const dt = (performance.now() - t0) / 1e3;
        if (seen !== n) throw new Error('count mismatch');
        result('throughput', n / dt, 'msgs/s');
      });
      for (let i = 0; i < n; i++) w.postMessage(i);
    });
    w.on('exit', resolve);
  });
}

// fanin: 8 workers each post n/8 integers to main at once; main counts
// them. Time from the first 'go' to the last message. fanout: main posts
// n/8 integers to each of 8 workers, one worker after the other per
// integer; each counts its own and replies once. Time to the 8th reply.
const FAN = 8;

function fanin(n) {
  return new Promise((resolve) => {
    const per = Math.floor(n / FAN);
    const ws = [];
    let online = 0, got = 0, exited = 0, t0 = 0;
    for (let k = 0; k < FAN; k++) {
      const w = spawn('fanin', { n: per });
      ws.push(w);
      w.on('online', () => {
        if (++online < FAN) return;
        t0 = performance.now();
        for (const x of ws) x.postMessage('go');
      });
      w.on('message', () => {
        if (++got < per * FAN) return;
        const dt = (performance.now() - t0) / 1e3;
        result('fanin', per * FAN / dt, 'msgs/s');
        for (const x of ws) x.postMessage('stop');
      });
      w.on('exit', () => { if (++exited === FAN) resolve(); });
    }
  });
}

function fanout(n) {
  return new Promise((resolve) => {
    const per = Math.floor(n / FAN);
    const ws = [];
    let online = 0, replies = 0, exited = 0, t0 = 0;
    for (let k = 0; k < FAN; k++) {
      const w = spawn('count', { n: per });
      ws.push(w);
      w.on('online', () => {
        if (++online < FAN) return;
        t0 = performance.now();
        for (let i = 0; i < per; i++) for (const x of ws) x.postMessage(i);
      });
      w.on('message', (seen) => {
        if (seen !== per) throw new Error('fanout: count mismatch');
        if (++replies < FAN) return;
        const dt = (performance.now() - t0) / 1e3;
        result('fanout', per * FAN / dt, 'msgs/s');
      });
      w.on('exit', () => { if (++exited === FAN) resolve(); });
    }
  });
}

function copy1m(n) {
  // A window of W payloads in flight; each ack lets one more go.
  return new Promise((resolve) => {
    const W = 8;
    const warm = 16;
    const payload = new Uint8Array(MiB);
    for (let i = 0; i < MiB; i += 4096) payload[i] = i & 255;
    const w = spawn('sink');
    let sent = 0;
    let acked = 0;
    let t0 = 0;
    const total = warm + n;
    w.on('message', (len) => {
      if (len !== MiB) throw new Error('bad ack');
      acked++;
      if (acked === warm) t0 = performance.now();
      if (sent < total) { w.postMessage(payload); sent++; }
      if (acked === total) {
        const dt = (performance.now() - t0) / 1e3;
        result('copy1m', n * MiB / dt / 1e9, 'GB/s');
        w.postMessage('stop');
      }
    });
    w.on('exit', resolve);
    for (; sent < W && sent < total; sent++) w.postMessage(payload);
  });
}

function transferOne(size, n) {
  return new Promise((resolve) => {
    const warm = Math.min(100, n);
    const w = spawn('bounce');
    let buf = new ArrayBuffer(size);
    let got = 0;
    let t0 = 0;
    w.on('message', (m) => {
      if (m.byteLength !== size) throw new Error('bad size');
      got++;
      if (got === warm) t0 = performance.now();
      if (got < warm + n) { w.postMessage(m, [m]); return; }
      const dt = (performance.now() - t0) / 1e3;
      // Two transfers per round trip.
      result(`transfer.${label(size)}`, dt / (2 * n) * 1e6, 'us');
      w.postMessage('stop');
    });
    w.on('exit', resolve);
    w.postMessage(buf, [buf]);
    buf = null;
  });
}

function label(size) {
  if (size >= MiB) return (size / MiB) + 'm';
  return (size / 1024) + 'k';
}

async function transfer(n) {
  for (const size of [1024, MiB, 64 * MiB]) await transferOne(size, n);
}

function atomics(n) {
  return new Promise((resolve) => {
    const warm = 1000;
    const sab = new SharedArrayBuffer(64);
    const i32 = new Int32Array(sab);
    const w = spawn('atomics', { sab, n: warm + n });
    w.on('message', (m) => {
      if (m !== 'ready') return;
      let t0 = 0;
      for (let i = 1; i <= warm + n; i++) {
        if (i === warm + 1) t0 = performance.now();
        Atomics.store(i32, 0, i);
        Atomics.notify(i32, 0);
        while (Atomics.load(i32, 1) !== i) Atomics.wait(i32, 1, i - 1);
      }
      const dt = (performance.now() - t0) / 1e3;
      result('atomics.rtt', dt / n * 1e6, 'us');
    });
    w.on('exit', resolve);
  });
}

async function spawnBench(n) {
  const once = () => new Promise((resolve) => {
    const w = new Worker('', { eval: true });
    w.on('exit', resolve);
  });
  await once(); // warm-up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await once();
  const dt = (performance.now() - t0) / 1e3;
  result('spawn.each', dt / n * 1e6, 'us');
  // Node always starts a fresh thread and isolate: the same number.
  result('spawn.fresh', dt / n * 1e6, 'us');
  result('spawn.rate', n / dt, 'workers/s');
}

function idle(nworkers, role = 'idle') {
  return new Promise((resolve) => {
    const ws = [];
    for (let i = 0; i < nworkers; i++) ws.push(spawn(role));
    setTimeout(() => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      setTimeout(() => {
        const c = process.cpuUsage(c0);
        const wall = (performance.now() - t0) * 1e3; // us
        result(`${role}${nworkers}.cpu`, (c.user + c.system) / wall * 100,
               '%core');
        let left = ws.length;
        for (const w of ws) w.terminate().then(() => { if (--left === 0) resolve(); });
      }, 2000);
    }, 1000);
  });
}

// cpurate: main posts [1,'ping'] to W echo workers at a fixed rate per
// worker (a 10 ms interval posting one message for 100/s; a 1 ms interval
// posting rate/1000 for more) and counts the echoes; after 0.5 s, the
// process's CPU over 2 s of wall time, as % of one core, and the echoes/s.
function cpurateOne(name, nw, rate) {
  return new Promise((resolve) => {
    const ws = [];
    const msg = [1, 'ping'];
    const perTick = rate >= 1000 ? rate / 1000 : 1;
    let echoed = 0, exited = 0;
    for (let k = 0; k < nw; k++) {
      const w = spawn('echo');
      w.on('message', () => { echoed++; });
      w.on('exit', () => { if (++exited === nw) resolve(); });
      ws.push(w);
    }
    const tick = setInterval(() => {
      for (const w of ws) for (let i = 0; i < perTick; i++) w.postMessage(msg);
    }, rate >= 1000 ? 1 : 1000 / rate);
    setTimeout(() => {
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const e0 = echoed;
      setTimeout(() => {
        const c = process.cpuUsage(c0);
        const wallMs = performance.now() - t0;
        result(`cpurate.${name}`, (c.user + c.system) / (wallMs * 1e3) * 100, '%core');
        result(`cpurate.${name}.rate`, (echoed - e0) / (wallMs / 1e3), 'msgs/s');
        clearInterval(tick);
        for (const w of ws) w.postMessage('stop');
      }, 2000);
    }, 500);
  });
}

// BENCH_CPURATE="1w.10k 8w.100" runs only those configs; unset, all.
async function cpurate() {
  const only = (process.env.BENCH_CPURATE || '').split(/[ ,]+/).filter((s) => s);
  const configs = [['1w.100', 1, 100], ['1w.1k', 1, 1000], ['1w.10k', 1, 10000],
    ['1w.100k', 1, 100000], ['8w.100', 8, 100], ['8w.1k', 8, 1000], ['8w.10k', 8, 10000]];
  for (const [name, nw, rate] of configs) {
    if (only.length === 0 || only.includes(name)) await cpurateOne(name, nw, rate);
  }
}

const DEFAULT_N = {
  pingpong: 50000,
  throughput: 1000000,
  fanin: 800000,
  fanout: 800000,
  copy1m: 2000,
  transfer: 2000,
  atomics: 50000,
  spawn: 50,
  idle: 8,
  tick: 8,
  cpurate: 1,
};

const FUNCS = {
  pingpong, throughput, fanin, fanout, copy1m, transfer, atomics, spawn: spawnBench, idle,
  tick: (n) => idle(n, 'tick'),
  cpurate,
};

async function main() {
  const wl = process.argv[2];
  if (!FUNCS[wl]) {
    process.stderr.write(`usage: node bench.js <${Object.keys(FUNCS).join('|')}> [N]\n`);
    process.exit(2);
  }
  const n = process.argv[3] ? Number(process.argv[3]) : DEFAULT_N[wl];
  await FUNCS[wl](n);
}

if (isMainThread) {
  main().catch((e) => { console.error(e); process.exit(1); });
} else {
  workerMain();
}
