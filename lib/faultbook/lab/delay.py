"""A userspace netem: delay and drop a lab host's outgoing packets through NFQUEUE.

This machine's kernel has no sch_netem, so `faultbook lab netem` queues the
host's outgoing packets (an iptables NFQUEUE rule in the host's network
namespace, ``--queue-bypass`` so the host stays reachable if this process
dies) and this process gives each packet its verdict: DROP with the given
probability, otherwise ACCEPT once it has waited the given delay. Order is
kept, as netem keeps it for a constant delay.

Run as: python -m faultbook.lab.delay --netns-pid PID --queue N --delay-ms D --loss-pct L
It prints "ready" once bound, then runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_DROP = 0
NF_ACCEPT = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
CLONE_NEWNET = 0x40000000


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _msg(msg_type: int, queue: int, attrs: bytes, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return (
        struct.pack(
            "=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, NLM_F_REQUEST, seq, 0
        )
        + body
    )


def verdict_msg(queue: int, packet_id: int, verdict: int) -> bytes:
    return _msg(
        NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
    )


def parse_packet_ids(data: bytes) -> list[int]:
    """Packet ids from a buffer of netlink messages (NFQNL_MSG_PACKET only)."""
    ids = []
    off = 0
    while off + 16 <= len(data):
        length, mtype = struct.unpack_from("=IH", data, off)
        if length < 16:
            break
        if mtype == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            a = off + 20  # nlmsghdr + nfgenmsg
            end = off + length
            while a + 4 <= end:
                alen, akind = struct.unpack_from("=HH", data, a)
                if alen < 4:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, a + 4)[0])
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
    return ids


def enter_netns(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into the network namespace of pid {pid}")
    finally:
        os.close(fd)


def serve(queue: int, delay_s: float, loss: float, rng: random.Random) -> None:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((0, 0))
    sock.send(
        _msg(
            NFQNL_MSG_CONFIG,
            queue,
            _attr(NFQA_CFG_CMD, struct.pack("=BBH", NFQNL_CFG_CMD_BIND, 0, 0)),
        )
    )
    sock.send(
        _msg(
            NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
        )
    )
    sock.send(_msg(NFQNL_MSG_CONFIG, queue, _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 20000))))
    sock.send(
        _msg(
            NFQNL_MSG_CONFIG,
            queue,
            _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
            + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
        )
    )
    print("ready", flush=True)  # noqa: T201 - the handshake its parent reads on stdout
    pending: collections.deque[tuple[float, int]] = collections.deque()
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            sock.send(verdict_msg(queue, pending.popleft()[1], NF_ACCEPT))
        wait = max(0.0, pending[0][0] - now) if pending else 0.5
        try:
            ready, _, _ = select.select([sock], [], [], wait)
        except InterruptedError:
            continue
        if not ready:
            continue
        try:
            data = sock.recv(1 << 16)
        except OSError:
            continue
        arrived = time.monotonic()
        for pid in parse_packet_ids(data):
            if loss and rng.random() < loss:
                sock.send(verdict_msg(queue, pid, NF_DROP))
            elif delay_s <= 0:
                sock.send(verdict_msg(queue, pid, NF_ACCEPT))
            else:
                pending.append((arrived + delay_s, pid))
    for _, pid in pending:  # release what is held: reverting a fault loses nothing more
        sock.send(verdict_msg(queue, pid, NF_ACCEPT))
    sock.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="faultbook.lab.delay")
    ap.add_argument("--netns-pid", type=int, required=True)
    ap.add_argument("--queue", type=int, default=7)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--loss-pct", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    enter_netns(a.netns_pid)
    serve(a.queue, a.delay_ms / 1000.0, a.loss_pct / 100.0, random.Random(a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
