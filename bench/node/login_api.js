'use strict';
// weft bench, Node.js side of the login benchmark (bench/login.sh): the
// login API of samples/login_api.c written the way a Node program would,
// with `http` and `crypto.scrypt`, which Node runs on libuv's threadpool.
//
//   node bench/node/login_api.js [--port P] [--host H] [--workers N] [--threads T]
//
// POST /login with an application/x-www-form-urlencoded body
// `user=alice&password=wonderland` verifies the password with scrypt
// (N=16384 r=8 p=1, 32-byte output, as libsodium's
// crypto_pwhash_scryptsalsa208sha256_ll in the C server; 16-byte salts)
// against the hash computed at start: 200 and {"ok":true,"user":"..."} if
// it matches, 401 if not (an unknown user is hashed too, so the answer
// takes as long). GET /health is answered on the loop with the same small
// JSON status as the C server. A malformed form 400, unknown paths 404,
// other methods 405 (with Allow), bodies over 4 KiB 413. The same users,
// responses and limits as samples/login_api.c, so both do the same work.
//
// --threads T sets UV_THREADPOOL_SIZE (libuv's default is 4; login.sh passes
// the CPU count, as the C server gets a pool of that many threads). It must
// be set before the threadpool's first use, which is the hashing of the
// users below: it is. --workers N forks N processes with `cluster` (Node's
// default scheduling: the primary accepts and hands connections round
// robin), each with T threadpool threads. Prints one line
// `listening on http://HOST:PORT` once every process listens; exits 0 on
// SIGTERM or SIGINT.
const cluster = require('cluster');
const crypto = require('crypto');
const http = require('http');

const SCRYPT = { N: 16384, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const HASH_LEN = 32;
const MAX_BODY = 4096;
const SALT_BYTES = 16;
const USERS = { alice: 'wonderland', bob: 'builder', carol: 'correct horse battery staple' };

function parseArgs(argv) {
  const o = { port: 3000, host: '127.0.0.1', workers: 0, threads: 0 };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = argv[i + 1];
    const num = () => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) usage(`${k} needs a number, got ${v}`);
      i++;
      return n;
    };
    if (k === '--port') o.port = num();
    else if (k === '--host') { if (v === undefined) usage('--host needs a value'); o.host = v; i++; }
    else if (k === '--workers') o.workers = num();
    else if (k === '--threads') o.threads = num();
    else usage(`unknown argument ${k}`);
  }
  return o;
}

function usage(msg) {
  process.stderr.write(`login_api.js: ${msg}\n` +
    'usage: node login_api.js [--port P] [--host H] [--workers N] [--threads T]\n');
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
if (opts.threads > 0) process.env.UV_THREADPOOL_SIZE = String(opts.threads);

function scrypt(password, salt) {
  return new Promise((resolve, reject) => {
    crypto.scrypt(password, salt, HASH_LEN, SCRYPT, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function send(res, status, body, allow) {
  const headers = { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) };
  if (allow) headers.Allow = allow;
  res.writeHead(status, headers);
  res.end(body);
}

async function serve() {
  // The users' salts and hashes, computed at start (on the threadpool).
  const users = new Map();
  for (const [name, password] of Object.entries(USERS)) {
    const salt = crypto.randomBytes(SALT_BYTES);
    users.set(name, { salt, hash: await scrypt(password, salt) });
  }
  const nobody = { salt: crypto.randomBytes(SALT_BYTES), hash: Buffer.alloc(HASH_LEN) };
  const started = Date.now();
  const workerId = cluster.isWorker ? cluster.worker.id : 0;
  let connections = 0;
  let hashing = 0;
  let logins = 0;

  const server = http.createServer((req, res) => {
    const url = req.url.split('?')[0];
    if (url === '/health') {
      if (req.method !== 'GET') return send(res, 405, '{"error":"method not allowed"}', 'GET');
      return send(res, 200, `{"status":"ok","worker":${workerId},"pid":${process.pid},` +
        `"uptime_ms":${Date.now() - started},"connections":${connections},"hashing":${hashing},"logins":${logins}}`);
    }
    if (url !== '/login') return send(res, 404, '{"error":"not found"}');
    if (req.method !== 'POST') return send(res, 405, '{"error":"method not allowed"}', 'POST');
    const chunks = [];
    let size = 0;
    let over = false;
    req.on('data', (c) => {
      if (over) return;
      size += c.length;
      if (size > MAX_BODY) {
        over = true;
        res.setHeader('Connection', 'close');
        send(res, 413, '{"error":"Content Too Large"}');
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (over) return;
      const form = new URLSearchParams(Buffer.concat(chunks).toString('latin1'));
      const name = form.get('user');
      const password = form.get('password');
      if (name === null || password === null) {
        return send(res, 400, '{"error":"expected a form user=...&password=..."}');
      }
      const user = users.get(name) || nobody;
      hashing++;
      scrypt(password, user.salt).then((key) => {
        hashing--;
        logins++;
        const ok = users.has(name) && crypto.timingSafeEqual(key, user.hash);
        if (ok) send(res, 200, `{"ok":true,"user":${JSON.stringify(name)}}`);
        else send(res, 401, '{"error":"wrong user or password"}');
      }, () => {
        hashing--;
        send(res, 500, '{"error":"internal error"}');
      });
    });
  });
  // A client that never finishes its request does not hold a connection.
  server.headersTimeout = 10000;
  server.requestTimeout = 10000;
  server.keepAliveTimeout = 5000;
  server.on('connection', (socket) => {
    connections++;
    socket.on('close', () => connections--);
  });
  server.on('clientError', (err, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, resolve);
  });
  const stop = () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  return server.address().port;
}

function fail(err) {
  process.stderr.write(`login_api.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
}

if (opts.workers > 0 && cluster.isPrimary) {
  // The primary: fork N workers; announce once all of them listen; restart
  // one that dies unless we are stopping.
  let stopping = false;
  let listening = 0;
  let announced = false;
  const fork = () => cluster.fork(); // inherits UV_THREADPOOL_SIZE set above
  cluster.on('listening', (worker, address) => {
    if (announced || ++listening < opts.workers) return;
    announced = true;
    process.stdout.write(`listening on http://${opts.host}:${address.port}\n`);
  });
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
      return;
    }
    process.stderr.write(`login_api.js: worker ${worker.process.pid} died (${signal || code}), restarting\n`);
    fork();
  });
  const stop = () => {
    if (stopping) return;
    stopping = true;
    const live = Object.values(cluster.workers);
    if (live.length === 0) process.exit(0);
    for (const w of live) w.process.kill('SIGTERM');
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  for (let i = 0; i < opts.workers; i++) fork();
} else if (opts.workers > 0) {
  serve().catch(fail);
} else {
  serve().then((port) => process.stdout.write(`listening on http://${opts.host}:${port}\n`), fail);
}
