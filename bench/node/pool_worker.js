'use strict';
// The tasks of bench/node/pool.js, for Piscina (module.exports) and for the
// hand-made worker_threads pool (a parentPort handler, when workerData
// says so). The same algorithms as bench/weft_bench.c's offload section.
const { parentPort, workerData, isMainThread } = require('worker_threads');

function isPrime(n) {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

function primes(b, e) {
  let c = 0;
  for (let i = b; i < e; i++) if (isPrime(i)) c++;
  return c;
}

// Rows [y0, y1) of a W x H image of iteration counts (Uint16Array `img`).
function mandelRows(img, W, H, ITER, y0, y1) {
  for (let y = y0; y < y1; y++) {
    const ci = -1.125 + 2.25 * y / H;
    for (let x = 0; x < W; x++) {
      const cr = -2.25 + 3.0 * x / W;
      let zr = 0; let zi = 0; let i;
      for (i = 0; i < ITER; i++) {
        const zr2 = zr * zr; const zi2 = zi * zi;
        if (zr2 + zi2 > 4.0) break;
        zi = 2.0 * zr * zi + ci;
        zr = zr2 - zi2 + cr;
      }
      img[y * W + x] = i;
    }
  }
}

// One task: {kind: 'empty'} | {kind: 'primes', b, e, sab} |
// {kind: 'mandel', y0, y1, sab, W, H, ITER}. Shared results go through
// the SharedArrayBuffer (primes: Atomics.add on a BigInt64Array).
function run(t) {
  if (t === null || t.kind === 'empty') return null;
  if (t.kind === 'primes') {
    Atomics.add(new BigInt64Array(t.sab), 0, BigInt(primes(t.b, t.e)));
    return null;
  }
  if (t.kind === 'mandel') {
    mandelRows(new Uint16Array(t.sab), t.W, t.H, t.ITER, t.y0, t.y1);
    return null;
  }
  throw new Error('unknown task ' + t.kind);
}

module.exports = run;
module.exports.primes = primes;
module.exports.mandelRows = mandelRows;

if (!isMainThread && workerData && workerData.plain) {
  // Hand-made pool: each message is [id, task]; answer [id, result].
  parentPort.on('message', (m) => parentPort.postMessage([m[0], run(m[1])]));
}
