// weft_client.mjs - a foreign client of weft nodes: Node.js with the `nats`
// and `@msgpack/msgpack` npm packages, speaking only the wire of
// docs/node.md. test_node runs it against node "b" of cluster "test", which
// serves "plus" (n -> n + 1, a negative n -> that error code) and "seq"
// (counts posts). Usage: node weft_client.mjs nats://127.0.0.1:PORT
// Exit 0 when every check holds; the first failed check exits 1.
import { connect, headers } from "nats";
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

await nc.drain();
console.log("weft_client: ok");
