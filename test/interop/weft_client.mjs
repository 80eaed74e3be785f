// weft_client.mjs - a foreign client of weft nodes: Node.js with the `nats`
// and `@msgpack/msgpack` npm packages, speaking only the wire of
// docs/node.md. test_node runs it against node "b" of cluster "test", which
// serves "plus" (n -> n + 1, a negative n -> that error code) and "seq"
// (counts posts), the pool group "math" (task "square": n -> n * n) and an
// actor system with "doubler" (an ask n -> 2n). Usage:
// node weft_client.mjs nats://127.0.0.1:PORT
// Exit 0 when every check holds; the first failed check exits 1.
import { connect, createInbox, headers } from "nats";
import { encode, decode } from "@msgpack/msgpack";

const url = process.argv[2];
const subject = (name) => `weft.test.b.p.${name}`;

function check(cond, what) {
  if (!cond) {
    console.error(`weft_client: FAILED: ${what}`);
    process.exit(1);
  }
}

const nc = await connect({ servers: url, name: "weft-interop" });

// A request: one msgpack value in, one out.
let m = await nc.request(subject("plus"), encode(41), { timeout: 5000 });
check(decode(m.data) === 42, `plus(41) = ${decode(m.data)}`);
m = await nc.request(subject("plus"), encode(1000000), { timeout: 5000 });
check(decode(m.data) === 1000001, "plus(1000000)");

// The replier's error: no payload, its name in the Weft-Error header.
m = await nc.request(subject("plus"), encode(-5015), { timeout: 5000 });
check(m.data.length === 0, "an error reply has no payload");
check(m.headers && m.headers.get("Weft-Error") === "EQUEUEFULL",
  `Weft-Error: ${m.headers && m.headers.get("Weft-Error")}`);

// Not one msgpack value: the node says EDECODE.
m = await nc.request(subject("plus"), Uint8Array.of(0x92, 0x01), { timeout: 5000 });
check(m.headers && m.headers.get("Weft-Error") === "EDECODE", "malformed request");

// Nobody serves the name: NATS's "no responders".
let noResponders = false;
try {
  await nc.request(subject("nobody"), encode(1), { timeout: 5000 });
} catch (e) {
  noResponders = e.code === "503";
}
check(noResponders, "no responders for a name nobody serves");

// Posts: 100 integers in order (the test counts them), then a flush.
for (let i = 0; i < 100; i++) nc.publish(subject("seq"), encode(i));
await nc.flush();

// Headers a client might add are ignored by the node.
const h = headers();
h.set("X-Trace", "abc");
m = await nc.request(subject("plus"), encode(7), { timeout: 5000, headers: h });
check(decode(m.data) === 8, "plus(7) with a header");

// Three posts in one NATS message (a Weft-Batch: n frames, each a 4-byte
// big-endian length, the byte 1, one msgpack value): 100, 101, 102.
const items = [100, 101, 102].map((v) => encode(v));
const batch = new Uint8Array(items.reduce((n, b) => n + 5 + b.length, 0));
let at = 0;
for (const b of items) {
  new DataView(batch.buffer).setUint32(at, b.length);
  batch[at + 4] = 1;
  batch.set(b, at + 5);
  at += 5 + b.length;
}
const bh = headers();
bh.set("Weft-Batch", String(items.length));
nc.publish(subject("seq"), batch, { headers: bh });
await nc.flush();

// A pool task (docs/node.md, "Distributed pool"): the offer [name, arg] with
// a reply subject of ours; the serving node answers [0, node] (taken), then
// [2, value] (the result). [1] (busy) or "no responders": offer it again.
let outcome = null;
for (let attempt = 0; attempt < 50 && outcome === null; attempt++) {
  const inbox = createInbox();
  const sub = nc.subscribe(inbox, { max: 2, timeout: 5000 });
  nc.publish("weft.test.pool.math", encode(["square", 12]), { reply: inbox });
  const got = [];
  for await (const msg of sub) {
    if (msg.headers && msg.headers.code === 503) break; // No worker free.
    check(!(msg.headers && msg.headers.get("Weft-Error")),
      `pool: Weft-Error ${msg.headers && msg.headers.get("Weft-Error")}`);
    const v = decode(msg.data);
    if (v[0] === 1) break; // Busy.
    got.push(v);
  }
  sub.unsubscribe();
  if (got.length === 2) outcome = got;
  else await new Promise((r) => setTimeout(r, 20));
}
check(outcome !== null, "a pool task was taken");
check(outcome[0][0] === 0 && outcome[0][1] === "b", `ack ${JSON.stringify(outcome[0])}`);
check(outcome[1][0] === 2 && outcome[1][1] === 144, `square(12) = ${JSON.stringify(outcome[1])}`);

// An actor (docs/node.md, "Actors across nodes"): an ask is a SEND envelope
// [0, from_node, from, to, value] made as a NATS request.
m = await nc.request("weft.test.b.a", encode([0, "js", 0, "doubler", 21]),
  { timeout: 5000 });
check(decode(m.data) === 42, `doubler(21) = ${decode(m.data)}`);
// An actor nobody registered: EDEADACTOR by name.
m = await nc.request("weft.test.b.a", encode([0, "js", 0, "nobody", 1]),
  { timeout: 5000 });
check(m.headers && m.headers.get("Weft-Error") === "EDEADACTOR",
  `ask nobody: ${m.headers && m.headers.get("Weft-Error")}`);

await nc.drain();
console.log("weft_client: ok");
