#!/usr/bin/env python3
"""make_corpus.py - write the seed corpus of the fuzz targets into
corpus/<target>/ (run once; the files are committed). Small msgpack values
of every type, weft's ext placeholders with good and bad indices, a few
malformed inputs, and the inputs that once crashed (regress-*)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def p(v):
    """A minimal msgpack packer (no third-party module needed)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v <= 0x7F:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if v >= 0:
            for code, fmt, lim in ((0xCC, ">B", 1 << 8), (0xCD, ">H", 1 << 16),
                                   (0xCE, ">I", 1 << 32), (0xCF, ">Q", 1 << 64)):
                if v < lim:
                    return bytes([code]) + struct.pack(fmt, v)
        for code, fmt, lim in ((0xD0, ">b", 1 << 7), (0xD1, ">h", 1 << 15),
                               (0xD2, ">i", 1 << 31), (0xD3, ">q", 1 << 63)):
            if -lim <= v:
                return bytes([code]) + struct.pack(fmt, v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        if len(b) < 32:
            return bytes([0xA0 | len(b)]) + b
        if len(b) < 256:
            return b"\xd9" + bytes([len(b)]) + b
        return b"\xda" + struct.pack(">H", len(b)) + b
    if isinstance(v, bytes):
        if len(v) < 256:
            return b"\xc4" + bytes([len(v)]) + v
        return b"\xc5" + struct.pack(">H", len(v)) + v
    if isinstance(v, Ext):
        n = len(v.data)
        fix = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fix:
            return bytes([fix[n]]) + struct.pack("b", v.type) + v.data
        return b"\xc7" + bytes([n]) + struct.pack("b", v.type) + v.data
    if isinstance(v, list):
        head = (bytes([0x90 | len(v)]) if len(v) < 16
                else b"\xdc" + struct.pack(">H", len(v)))
        return head + b"".join(p(x) for x in v)
    if isinstance(v, dict):
        head = (bytes([0x80 | len(v)]) if len(v) < 16
                else b"\xde" + struct.pack(">H", len(v)))
        return head + b"".join(p(k) + p(x) for k, x in v.items())
    raise TypeError(v)


class Ext:
    def __init__(self, type_, data):
        self.type = type_
        self.data = data


def ph(kind, index):
    """A weft placeholder: ext 80 (buffer), 81 (port), 82 (shared)."""
    return Ext(kind, struct.pack(">I", index & 0xFFFFFFFF))


VALUES = {
    "nil": None, "true": True, "false": False, "zero": 0, "neg": -1,
    "u8": 200, "u16": 60000, "u32": 1 << 31, "u64": 1 << 40,
    "i64": -(1 << 40), "f64": 1.5, "str": "hello", "str8": "x" * 40,
    "bin": b"\x00\x01\x02", "bin16": b"b" * 300, "array": [1, 2, 3],
    "nested": [[[[]]], {"a": [None, True]}], "map": {"a": 1, "b": "c"},
    "array16": list(range(20)), "map16": {str(i): i for i in range(17)},
    "ext_app": Ext(5, b"\x01"), "ext8": Ext(7, b"abc"),
    "placeholders": [ph(80, 0), ph(81, 0), ph(82, 0), 42],
    "placeholders_bad": [ph(80, 7), ph(81, 0xFFFFFFFF), ph(82, 3),
                         ph(80, 0), ph(80, 0)],
    "placeholder_kinds": {"b": ph(81, 0), "p": ph(82, 1), "s": ph(80, 2)},
    "placeholder_short": Ext(80, b"\x00\x00"),
    "placeholder_in_key": {ph(80, 0): ph(81, 1)},
    "deep32": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
}

MALFORMED = {
    "empty_array_truncated": b"\x92\x01",
    "never_used": b"\xc1",
    "trailing": b"\x01\x02",
    "str_truncated": b"\xa5ab",
    "array32_claim": b"\xdd\x00\x00\x10\x00\xc0",
}

# Inputs that crashed once (test/test_fuzz_regress.c replays them).
REGRESS = {
    "fuzz_msg_decode": {"regress-array32-header": b"\xdd\x96\x96\xca\x96"},
    "fuzz_take": {"regress-array32-header": b"\xd9" + b"\xdd" * 7},
    "fuzz_broadcast": {"regress-map32-header": b"\xdf" + b"\xb9" * 7},
}


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    plain = {k: p(v) for k, v in VALUES.items()}
    plain.update(MALFORMED)
    for target in ("fuzz_msg_decode", "fuzz_broadcast", "fuzz_worker_data"):
        for name, data in plain.items():
            write(target, name, data)
    for name, data in plain.items():
        # Mode byte: bit 0 set = weft_port_receive, clear = a handler.
        write("fuzz_port_roundtrip", name + "-receive", b"\x01" + data)
        write("fuzz_port_roundtrip", name + "-handler", b"\x00" + data)
    # fuzz_take: byte 0 = buffers (bits 0-1), ports (2-3), shared (4-5),
    # bit 6 = weft_port_receive instead of a handler.
    for name in ("placeholders", "placeholders_bad", "placeholder_kinds",
                 "placeholder_short", "placeholder_in_key", "nested", "nil"):
        for cfg in (0x15, 0x3F, 0x55, 0x00):
            write("fuzz_take", "%s-%02x" % (name, cfg),
                  bytes([cfg]) + plain[name])
    # fuzz_frame: byte 0 = largest payload / 16, bytes 1-2 = read sizes,
    # then frames (4-byte big-endian length, kind, payload).
    def frame(kind, payload):
        return struct.pack(">IB", len(payload), kind) + payload
    msgs = frame(1, p([1, "x"])) + frame(2, b"") + frame(1, b"\x01" * 300)
    write("fuzz_frame", "frames", b"\x40\x12\x34" + msgs)
    write("fuzz_frame", "frames_partial", b"\x40\x00\x01" + msgs[:-7])
    write("fuzz_frame", "kind_zero", b"\x40\x00\x02" + frame(0, b"ab"))
    write("fuzz_frame", "too_long", b"\x01\x00\x03" + frame(1, b"y" * 20))
    # fuzz_node_wire: byte 0 = the reader (0 message, 1 heartbeat, 2 reply
    # id, 3 error name, 4 name), then the foreign bytes.
    for name, data in plain.items():
        write("fuzz_node_wire", "msg-" + name, b"\x00" + data)
    beat = b"\x93\xcf" + struct.pack(">Q", 0x0123456789ABCDEF)
    slow = b"\xcf" + struct.pack(">Q", 7)
    write("fuzz_node_wire", "beat", b"\x01" + beat + b"\x00" + slow)
    write("fuzz_node_wire", "beat-leaving", b"\x01" + beat + b"\x01" + slow)
    write("fuzz_node_wire", "beat-bad", b"\x01" + beat + b"\x02" + slow)
    write("fuzz_node_wire", "beat-short", b"\x01" + beat + b"\x00")
    write("fuzz_node_wire", "id", b"\x0218446744073709551615")
    write("fuzz_node_wire", "id-overflow", b"\x0218446744073709551616")
    write("fuzz_node_wire", "id-sign", b"\x02+12")
    write("fuzz_node_wire", "error", b"\x03EQUEUEFULL")
    write("fuzz_node_wire", "error-uv", b"\x03ETIMEDOUT")
    write("fuzz_node_wire", "error-unknown", b"\x03ENOPE")
    write("fuzz_node_wire", "name", b"\x04node-1_a")
    write("fuzz_node_wire", "name-dot", b"\x04a.b")
    write("fuzz_frame", "huge_header", b"\xff\x00\x04\xff\xff\xff\xff\x01")
    for target, files in REGRESS.items():
        for name, data in files.items():
            write(target, name, data)


if __name__ == "__main__":
    main()
