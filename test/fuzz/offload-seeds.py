#!/usr/bin/env python3
"""Seed inputs for test/fuzz/offload-fuzz.c: valid coalescible TCP batches
(IPv4 with timestamps, IPv6, mixed) and TSO super-packets with their virtio
headers, so the fuzzer starts from inputs that reach the deep paths.
Usage: offload-seeds.py DIR"""
import os
import struct
import sys


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp4(seq, payload, flags=0x10, ident=1, opts=b"\x01\x01\x08\x0a\0\0\0\1\0\0\0\2"):
    th = 20 + len(opts)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + th + len(payload), ident, 0x4000, 64, 6, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    ip = ip[:10] + struct.pack("!H", ~csum(ip) & 0xFFFF) + ip[12:]
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, seq, 777, (th // 4) << 4, flags, 5000, 0, 0) + opts + payload
    pseudo = bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 6]) + struct.pack("!H", len(tcp))
    return ip + tcp[:16] + struct.pack("!H", ~csum(pseudo + tcp) & 0xFFFF) + tcp[18:]


def tcp6(seq, payload, flags=0x10):
    src = bytes([0xFD] + [0] * 14 + [1])
    dst = bytes([0xFD] + [0] * 14 + [2])
    tcp = struct.pack("!HHIIBBHHH", 40000, 443, seq, 777, 5 << 4, flags, 5000, 0, 0) + payload
    pseudo = src + dst + struct.pack("!I", len(tcp)) + b"\0\0\0\x06"
    tcp = tcp[:16] + struct.pack("!H", ~csum(pseudo + tcp) & 0xFFFF) + tcp[18:]
    return struct.pack("!IHBB", 0x60000000, len(tcp), 6, 64) + src + dst + tcp


def batch(pkts):
    return b"\x01" + b"".join(struct.pack("<H", len(p)) + p for p in pkts)


def vnet(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    segs = [tcp4(1000 + i * 100, bytes([i]) * 100, ident=1 + i) for i in range(5)]
    seeds = {
        "batch-v4": batch(segs),
        "batch-v6": batch([tcp6(1000 + i * 100, bytes([i]) * 100) for i in range(4)]),
        "batch-mixed": batch([segs[0], tcp6(5, b"x" * 50), segs[1], segs[2], tcp4(1300, b"y" * 40, flags=0x18)]),
        "read-tso-v4": b"\x00" + vnet(1, 1, 52, 500, 20, 16) + tcp4(1000, bytes(range(256)) * 20),
        "read-tso-v6": b"\x00" + vnet(1, 4, 60, 700, 40, 16) + tcp6(1000, bytes(range(256)) * 12),
        "read-csum": b"\x00" + vnet(1, 0, 0, 0, 20, 16) + segs[0],
    }
    for name, data in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
