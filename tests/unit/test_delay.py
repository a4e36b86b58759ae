from __future__ import annotations

import socket
import struct

from faultbook.lab import delay


def packet_msg(packet_id: int) -> bytes:
    hdr = delay._attr(delay.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 3))
    other = delay._attr(9, b"\x01\x02\x03")
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(7)) + other + hdr
    return struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body


def test_packet_ids_are_read_from_a_batch_of_messages() -> None:
    data = packet_msg(41) + packet_msg(42)
    assert delay.parse_packet_ids(data) == [41, 42]


def test_other_message_types_are_ignored() -> None:
    err = struct.pack("=IHHII", 20, 2, 0, 0, 0) + b"\0" * 4
    assert delay.parse_packet_ids(err + packet_msg(7)) == [7]


def test_verdict_message_layout() -> None:
    msg = delay.verdict_msg(7, 1234, delay.NF_ACCEPT)
    length, mtype = struct.unpack_from("=IH", msg)
    assert length == len(msg) == 16 + 4 + 12
    assert mtype == (3 << 8) | 1
    verdict, pid = struct.unpack_from("!II", msg, 24)
    assert (verdict, pid) == (1, 1234)
