"""What pyzmq costs per message on the node's reply path, without the network: a ROUTER sends
replies to a DEALER over inproc, in the ways a node could send them.

    python bench/sockets_bench.py [--messages 20000]

Prints microseconds of wall time per message (one process, one thread sending; the DEALER is
drained between runs) for:

- a read reply (4 frames: routing id, delimiter, header, 64-byte value) and a read_many reply of
  16 keys as one value frame per key (19 frames) and as one value frame (4 frames);
- each sent with pyzmq's send_multipart(copy=False) (what the node did), with send_multipart
  (copy=True), and frame by frame with int flags and copy=True (what zcraq/sockets.py does for
  frames under 64 KiB).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import zmq

NOBLOCK = int(zmq.NOBLOCK)
MORE_NOBLOCK = int(zmq.SNDMORE | zmq.NOBLOCK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000, help="messages per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per way; the best is printed")
    args = parser.parse_args()
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for sock in (router, dealer):
        sock.set_hwm(0)  # inproc, drained between runs: nothing queues without bound for long
        sock.setsockopt(zmq.LINGER, 0)
    router.bind("inproc://bench")
    dealer.connect("inproc://bench")
    dealer.send_multipart([b"", b"hello"])
    identity = router.recv_multipart()[0]
    header = b'{"type":"ok","id":12345,"results":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}'
    shapes = {
        "read reply, 4 frames": [identity, b"", b'{"type":"ok","id":12345,"version":3}', b"x" * 64],
        "read_many 16, a frame per key (19)": [identity, b"", header, *([b"x" * 64] * 16)],
        "read_many 16, one value frame (4)": [identity, b"", header, b"x" * 64 * 16],
    }

    def multipart(frames: list[bytes], copy: bool) -> Callable[[], None]:
        return lambda: router.send_multipart(frames, zmq.NOBLOCK, copy=copy)

    def by_frame(frames: list[bytes]) -> Callable[[], None]:
        send, last = router.send, len(frames) - 1

        def run() -> None:
            for index, frame in enumerate(frames):
                send(frame, MORE_NOBLOCK if index < last else NOBLOCK)
        return run

    print(f"{'message':36} {'send_multipart copy=False':>26} {'send_multipart':>15} {'frame by frame':>15}")
    for name, frames in shapes.items():
        figures = [best(multipart(frames, False), dealer, args), best(multipart(frames, True), dealer, args),
                   best(by_frame(frames), dealer, args)]
        print(f"{name:36} " + " ".join(f"{f:{w}.2f}" for f, w in zip(figures, (23, 12, 12))) + " us/msg")
    ctx.destroy(linger=0)


def best(send_one: Callable[[], None], dealer: zmq.Socket, args: argparse.Namespace) -> float:
    results = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.messages):
            send_one()
        results.append((time.perf_counter() - started) / args.messages * 1e6)
        while dealer.poll(50):
            dealer.recv_multipart()
    return min(results)


if __name__ == "__main__":
    main()
