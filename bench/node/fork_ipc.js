'use strict';
// weft bench, Node.js's peer of bench/nats_bench.c (issue 10): two
// processes through child_process.fork() and process.send() (an IPC pipe,
// no broker), with the same workloads and sizes:
//
//   node bench/node/fork_ipc.js <rtt|oneway|mib|all> [N]
//
// rtt: a 64-byte Buffer sent as a request and echoed back, N (3,000) round
// trips after 500 of warm-up: median and p99. oneway: N (500,000) 64-byte
// posts (after a tenth of that), then the request "count" as the end
// marker (the child answers with the posts it counted; a pipe keeps
// order): posts received and sent per second. mib: a 1 MiB Buffer echoed,
// 50 after 5 of warm-up: median. serialization: 'advanced' (the structured
// clone: a Buffer travels as bytes, not as JSON).
// RESULT nats.nodeipc.<rtt|rtt_p99|oneway|oneway_sent|oneway_lost|mib>.
const { fork } = require('child_process');

if (process.argv[2] === 'child') {
  // A post is a Buffer (counted); a request is [Buffer] (echoed) or
  // 'count' (answered with the count since the last one).
  let counted = 0;
  process.on('message', (m) => {
    if (m === 'count') {
      process.send(counted);
      counted = 0;
    } else if (Array.isArray(m)) {
      process.send(m[0]);
    } else {
      counted++;
    }
  });
  process.on('disconnect', () => process.exit(0));
} else {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}

async function main() {
  const wl = process.argv[2] || 'all';
  const n = Number(process.argv[3]) || 0;
  const child = fork(__filename, ['child'], { serialization: 'advanced' });
  let waiting = null;
  child.on('message', (m) => {
    const w = waiting;
    waiting = null;
    w(m);
  });
  const request = (m) =>
    new Promise((resolve) => {
      waiting = resolve;
      child.send(m);
    });
  const result = (metric, v, unit) =>
    console.log(`RESULT nats.nodeipc.${metric} ${Number(v.toPrecision(4))} ${unit}`);
  const now = () => Number(process.hrtime.bigint()) / 1e3; // us

  const timed = async (buf, warm, count) => {
    const t = [];
    for (let i = 0; i < warm; i++) await request([buf]);
    for (let i = 0; i < count; i++) {
      const t0 = now();
      const r = await request([buf]);
      t.push(now() - t0);
      if (r.length !== buf.length) throw new Error('short reply');
    }
    return t.sort((a, b) => a - b);
  };

  if (wl === 'rtt' || wl === 'all') {
    const t = await timed(Buffer.alloc(64, 'x'), 500, n || 3000);
    result('rtt', t[t.length >> 1], 'us');
    result('rtt_p99', t[Math.floor((t.length * 99) / 100)], 'us');
  }
  if (wl === 'oneway' || wl === 'all') {
    const count = n || 500000;
    const buf = Buffer.alloc(64, 'x');
    for (let i = 0; i < count / 10; i++) child.send(buf);
    await request('count');
    const t0 = now();
    for (let i = 0; i < count; i++) child.send(buf);
    const got = await request('count');
    const secs = (now() - t0) * 1e-6;
    result('oneway', got / secs, 'msgs/s');
    result('oneway_sent', count / secs, 'msgs/s');
    result('oneway_lost', count - got, 'msgs');
  }
  if (wl === 'mib' || wl === 'all') {
    const t = await timed(Buffer.alloc(1 << 20, 'x'), 5, n || 50);
    result('mib', t[t.length >> 1], 'us');
  }
  child.disconnect();
}
