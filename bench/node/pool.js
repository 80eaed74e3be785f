'use strict';
// weft bench, Node.js side of the pool and offload workloads (issue 6):
// the same work as bench/weft_bench.c's "pool" and "offload".
//
//   node bench/node/pool.js <pool|offload> [N]
//
// pool: empty tasks per second with POOL_WINDOW in flight, through Piscina
// (RESULT pool.tasks; needs `npm install` in bench/node, which
// bench/run.sh does) and through a hand-made round robin over plain
// worker_threads (RESULT pool.tasks.wt). One thread per core for both.
// offload: primes below OFF_PRIMES_N and a Mandelbrot image on one thread
// and on a hand-made worker_threads pool (chunks handed to whichever
// worker is free, results in a SharedArrayBuffer), warm and counting the
// workers' start: RESULT offload.<primes|mandel>.<1t|warm|cold>.
const os = require('os');
const path = require('path');
const { Worker } = require('worker_threads');
const { performance } = require('perf_hooks');
const work = require('./pool_worker.js');

const WORKER = path.join(__dirname, 'pool_worker.js');
const POOL_WINDOW = 256;
const POOL_WARM = 2000;
const OFF_PRIMES_N = 3000000;
const OFF_PRIMES_CHUNKS = 64;
const OFF_W = 1200;
const OFF_H = 900;
const OFF_ITER = 1000;
const OFF_ROWS = 8;
const CPUS = os.availableParallelism ? os.availableParallelism() : os.cpus().length;

function result(metric, value, unit) {
  const v = Math.abs(value) >= 100 ? value.toFixed(1) : value.toPrecision(4);
  process.stdout.write(`RESULT ${metric} ${v} ${unit}\n`);
}

// Keep `window` calls of `submit()` (which returns a promise) in flight
// until `total` settled; resolve with the time from the `warm`-th on.
function windowed(total, warm, window, submit) {
  return new Promise((resolve, reject) => {
    let sent = 0; let done = 0; let t0 = performance.now();
    const one = () => {
      sent++;
      submit().then(() => {
        done++;
        if (done === warm) t0 = performance.now();
        if (sent < total) one();
        else if (done === total) resolve((performance.now() - t0) / 1e3);
      }, reject);
    };
    while (sent < window && sent < total) one();
  });
}

// A hand-made pool of plain worker_threads: tasks go round robin, each
// reply settles the promise of its id.
class PlainPool {
  constructor(n) {
    this.next = 0; this.id = 0; this.pending = new Map();
    this.workers = [];
    for (let i = 0; i < n; i++) {
      const w = new Worker(WORKER, { workerData: { plain: true } });
      w.on('message', (m) => {
        const p = this.pending.get(m[0]);
        this.pending.delete(m[0]);
        p(m[1]);
      });
      w.on('error', (e) => { throw e; });
      this.workers.push(w);
    }
  }

  online() {
    return Promise.all(this.workers.map((w) => new Promise((r) => w.once('online', r))));
  }

  run(task) {
    return new Promise((resolve) => {
      const id = this.id++;
      this.pending.set(id, resolve);
      this.workers[this.next].postMessage([id, task]);
      this.next = (this.next + 1) % this.workers.length;
    });
  }

  // Hand out `tasks` to whichever worker is free (as a pool queue does).
  runAll(tasks) {
    return new Promise((resolve) => {
      let i = 0; let left = tasks.length;
      const feed = (w) => {
        if (i >= tasks.length) return;
        const id = this.id++;
        this.pending.set(id, () => { if (--left === 0) resolve(); else feed(w); });
        w.postMessage([id, tasks[i++]]);
      };
      if (left === 0) resolve();
      for (const w of this.workers) feed(w);
    });
  }

  close() { return Promise.all(this.workers.map((w) => w.terminate())); }
}

async function pool(n) {
  let Piscina = null;
  try {
    Piscina = require('piscina');
  } catch (e) {
    process.stderr.write('pool.js: piscina is not installed (npm install in bench/node): skipped\n');
  }
  if (Piscina) {
    const P = Piscina.Piscina || Piscina;
    const p = new P({ filename: WORKER, minThreads: CPUS, maxThreads: CPUS, idleTimeout: 60000 });
    const dt = await windowed(POOL_WARM + n, POOL_WARM, POOL_WINDOW, () => p.run(null));
    result('pool.tasks', n / dt, 'tasks/s');
    result('pool.task_us', dt / n * 1e6, 'us');
    await p.destroy();
  }
  const pp = new PlainPool(CPUS);
  await pp.online();
  const dt = await windowed(POOL_WARM + n, POOL_WARM, POOL_WINDOW, () => pp.run(null));
  result('pool.tasks.wt', n / dt, 'tasks/s');
  await pp.close();
}

function primesTasks(sab) {
  const chunk = Math.ceil(OFF_PRIMES_N / OFF_PRIMES_CHUNKS);
  const t = [];
  for (let b = 0; b < OFF_PRIMES_N; b += chunk) {
    t.push({ kind: 'primes', b, e: Math.min(b + chunk, OFF_PRIMES_N), sab });
  }
  return t;
}

function mandelTasks(sab) {
  const t = [];
  for (let y = 0; y < OFF_H; y += OFF_ROWS) {
    t.push({ kind: 'mandel', y0: y, y1: Math.min(y + OFF_ROWS, OFF_H), sab, W: OFF_W, H: OFF_H, ITER: OFF_ITER });
  }
  return t;
}

// One parallel run on `pp` (null: start a pool, counted, and close it).
async function offRun(pp, primes) {
  const t0 = performance.now();
  const own = pp === null;
  if (own) { pp = new PlainPool(CPUS); await pp.online(); }
  let check;
  if (primes) {
    const sab = new SharedArrayBuffer(8);
    await pp.runAll(primesTasks(sab));
    check = Number(new BigInt64Array(sab)[0]);
  } else {
    const sab = new SharedArrayBuffer(2 * OFF_W * OFF_H);
    await pp.runAll(mandelTasks(sab));
    check = new Uint16Array(sab).reduce((a, v) => a + v, 0);
  }
  const dt = (performance.now() - t0) / 1e3;
  if (own) await pp.close();
  return { dt, check };
}

async function offload() {
  const warm = new PlainPool(CPUS);
  await warm.online();
  for (const primes of [true, false]) {
    const name = primes ? 'primes' : 'mandel';
    const t0 = performance.now();
    let one;
    if (primes) {
      one = work.primes(0, OFF_PRIMES_N);
    } else {
      const img = new Uint16Array(OFF_W * OFF_H);
      work.mandelRows(img, OFF_W, OFF_H, OFF_ITER, 0, OFF_H);
      one = img.reduce((a, v) => a + v, 0);
    }
    const t1 = (performance.now() - t0) / 1e3;
    await offRun(warm, primes); // warm-up
    const w = await offRun(warm, primes);
    const c = await offRun(null, primes);
    if (w.check !== one || c.check !== one) throw new Error(`offload ${name}: results differ`);
    result(`offload.${name}.1t`, t1 * 1e3, 'ms');
    result(`offload.${name}.warm`, t1 / w.dt, 'x');
    result(`offload.${name}.cold`, t1 / c.dt, 'x');
  }
  await warm.close();
}

const FUNCS = { pool, offload };
const DEFAULT_N = { pool: 200000, offload: 1 };

async function main() {
  const wl = process.argv[2];
  if (!FUNCS[wl]) {
    process.stderr.write(`usage: node pool.js <${Object.keys(FUNCS).join('|')}> [N]\n`);
    process.exit(2);
  }
  const n = process.argv[3] ? Number(process.argv[3]) : DEFAULT_N[wl];
  await FUNCS[wl](n);
}

main().catch((e) => { console.error(e); process.exit(1); });
