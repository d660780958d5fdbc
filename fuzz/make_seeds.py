#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets.

Usage: make_seeds.py CASES_DIR OUT_DIR

OUT_DIR/decode_file gets every file under CASES_DIR (README files excepted) and, for each
Part 10 file, its data set without preamble and File Meta, as a C-STORE delivers it.
OUT_DIR/decode_network gets generated PDUs (A-ASSOCIATE-RQ, P-DATA-TF with C-ECHO and C-STORE
commands, A-RELEASE-RQ, A-ABORT) and bare DIMSE command sets. Only the standard library is used.
"""

import struct
import sys
from pathlib import Path

# Explicit VR whose length field has 4 bytes after 2 reserved bytes (PS3.5 section 7.1.2).
LONG_LENGTH_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


def data_set_after_meta(data: bytes):
    """Returns the bytes after the File Meta group, or None when there is no File Meta."""
    if data[128:132] != b"DICM":
        return None
    pos = 132
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        vr = data[pos + 4:pos + 6]
        if vr in LONG_LENGTH_VRS:
            (length,) = struct.unpack_from("<I", data, pos + 8)
            pos += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            pos += 8 + length
    return data[pos:]


def element(group: int, number: int, value: bytes) -> bytes:
    """Encodes one Implicit VR Little Endian element, padding the value to an even length."""
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, number, len(value)) + value


def command_set(fields) -> bytes:
    """Encodes a command set with Command Group Length (0000,0000) first."""
    body = b"".join(element(0x0000, number, value) for number, value in fields)
    return element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def us(value: int) -> bytes:
    return struct.pack("<H", value)


ECHO_RQ = command_set([
    (0x0002, b"1.2.840.10008.1.1"),
    (0x0100, us(0x0030)),
    (0x0110, us(1)),
    (0x0800, us(0x0101)),
])
STORE_RQ = command_set([
    (0x0002, b"1.2.840.10008.5.1.4.1.1.2"),
    (0x0100, us(0x0001)),
    (0x0110, us(7)),
    (0x0700, us(0)),
    (0x0800, us(0x0000)),
    (0x1000, b"1.2.3.4.5.6.7"),
])


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def sub_item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq() -> bytes:
    context = bytes([1, 0, 0, 0])
    context += sub_item(0x30, b"1.2.840.10008.5.1.4.1.1.2")
    context += sub_item(0x40, b"1.2.840.10008.1.2.1")
    context += sub_item(0x40, b"1.2.840.10008.1.2")
    user = sub_item(0x51, struct.pack(">I", 131_072)) + sub_item(0x52, b"1.2.3.4")
    body = struct.pack(">HH", 1, 0) + b"PENUMBRA".ljust(16) + b"STORESCU".ljust(16) + bytes(32)
    body += sub_item(0x10, b"1.2.840.10008.3.1.1.1") + sub_item(0x20, context) + sub_item(0x50, user)
    return pdu(0x01, body)


def p_data(values) -> bytes:
    """Encodes a P-DATA-TF; each value is (context id, control header byte, bytes)."""
    body = b"".join(struct.pack(">IBB", len(data) + 2, context, control) + data for context, control, data in values)
    return pdu(0x04, body)


def network_seeds():
    data_set = element(0x0008, 0x0016, b"1.2.840.10008.5.1.4.1.1.2") + element(0x0008, 0x0018, b"1.2.3.4.5.6.7")
    return {
        "associate_rq": associate_rq(),
        "p_data_echo": p_data([(1, 0x03, ECHO_RQ)]),
        "p_data_store": p_data([(1, 0x03, STORE_RQ), (1, 0x00, data_set[:10]), (1, 0x02, data_set[10:])]),
        "release_rq": pdu(0x05, bytes(4)),
        "abort": pdu(0x07, bytes(4)),
        "command_echo": ECHO_RQ,
        "command_store": STORE_RQ,
    }


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    cases, out = Path(sys.argv[1]), Path(sys.argv[2])
    files_dir = out / "decode_file"
    network_dir = out / "decode_network"
    files_dir.mkdir(parents=True, exist_ok=True)
    network_dir.mkdir(parents=True, exist_ok=True)

    for path in sorted(p for p in cases.rglob("*") if p.is_file() and not p.name.startswith("README")):
        data = path.read_bytes()
        name = "_".join(path.relative_to(cases).parts)
        (files_dir / name).write_bytes(data)
        bare = data_set_after_meta(data)
        if bare:
            (files_dir / f"{name}.dataset").write_bytes(bare)

    for name, data in network_seeds().items():
        (network_dir / name).write_bytes(data)

    print(f"seeds: {len(list(files_dir.iterdir()))} files, {len(list(network_dir.iterdir()))} network inputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
