'use strict';
// weft bench: Node's own floor for the login benchmark (bench/login.sh), the
// counterpart of bench/scrypt_rate.c: how many of the login API's scrypt
// hashes per second Node's crypto.scrypt (OpenSSL's EVP_PBE_scrypt, on
// libuv's threadpool) does with THREADS hashes in flight on THREADS
// threadpool threads, no HTTP.
//
//   node bench/node/scrypt_rate.js [SECONDS [ROUNDS [THREADS]]]   defaults: 3 3 <CPUs>
//
// Prints the median of ROUNDS rounds: RESULT node.scrypt.rate <hashes/s>
// hashes/s (a round's rate: hashes done / time of the last completion).
const os = require('os');
const crypto = require('crypto');

const CPUS = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
const seconds = Number(process.argv[2] || 3);
const rounds = Number(process.argv[3] || 3);
const threads = Number(process.argv[4] || CPUS);
if (!(seconds > 0) || !(rounds >= 1) || !(threads >= 1)) {
  process.stderr.write('usage: node scrypt_rate.js [SECONDS [ROUNDS [THREADS]]]\n');
  process.exit(2);
}
// Before the threadpool's first use: one thread per hash in flight.
process.env.UV_THREADPOOL_SIZE = String(threads);

const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const salt = Buffer.alloc(16, 7); // 16-byte salts, as the servers
const expected = crypto.scryptSync('wonderland', salt, 32, SCRYPT);

function round() {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const deadline = start + BigInt(Math.round(seconds * 1e9));
    let done = 0;
    let last = 0n;
    let live = 0;
    const one = () => {
      live++;
      crypto.scrypt('wonderland', salt, 32, SCRYPT, (err, key) => {
        live--;
        if (err || !key.equals(expected)) return reject(err || new Error('wrong hash'));
        const t = process.hrtime.bigint();
        done++;
        last = t;
        if (t < deadline) one();
        else if (live === 0) resolve(done / (Number(last - start) / 1e9));
      });
    };
    for (let i = 0; i < threads; i++) one();
  });
}

(async () => {
  const rates = [];
  for (let r = 0; r < rounds; r++) {
    const rate = await round();
    process.stderr.write(`node scrypt_rate: round ${r + 1}: ${threads} threads, ${rate.toFixed(2)} hashes/s\n`);
    rates.push(rate);
  }
  rates.sort((a, b) => a - b);
  const n = rates.length;
  const med = n % 2 ? rates[(n - 1) / 2] : (rates[n / 2 - 1] + rates[n / 2]) / 2;
  process.stdout.write(`RESULT node.scrypt.rate ${med.toFixed(2)} hashes/s\n`);
})().catch((e) => {
  process.stderr.write(`node scrypt_rate: ${e.stack || e}\n`);
  process.exit(1);
});
