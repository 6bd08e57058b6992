#!/usr/bin/env python3
"""Live-update fan-out latency of `GET /events`, against a running server.

Opens SUBSCRIBERS event streams, then posts NOTES notes one at a time
(waiting for each 201 and reading the streams meanwhile) and measures, per
note, the time from sending the POST until each subscriber has received its
`note` event, and until the 201. The POST includes the
group-commit fdatasync (and, in a cluster with --ack all, the peers'
acknowledgement), so this is what a reader of an open page sees after a
writer presses "Add note". Prints p50/p99/max over all deliveries, and the
worst per note. Loopback only; bounded in count and time.

Usage: perf/sse_fanout.py HOST:PORT [SUBSCRIBERS] [NOTES] [POST_HOST:PORT]
"""
import json
import selectors
import socket
import sys
import time


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def main():
    addr = sys.argv[1]
    subscribers = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    notes = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    post_addr = sys.argv[4] if len(sys.argv) > 4 else addr
    sel = selectors.DefaultSelector()
    bufs = {}
    for _ in range(subscribers):
        s = connect(addr)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                sys.exit("stream closed during its head")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            sys.exit("not a stream: %r" % head[:80])
        s.setblocking(False)
        bufs[s] = head.split(b"\r\n\r\n", 1)[1]
        sel.register(s, selectors.EVENT_READ)
    poster = connect(post_addr)
    delays = []
    worst = []
    deadline = time.monotonic() + 120
    poster.setblocking(False)
    sel.register(poster, selectors.EVENT_READ)
    post_delays = []
    for i in range(notes):
        text = "fan-out %d %f" % (i, time.time())
        body = text.encode()
        # Each event's JSON carries the text; it is unique per note.
        marker = ('"text":"%s"}' % text).encode()
        started = time.monotonic()
        poster.sendall(b"POST /notes HTTP/1.1\r\nHost: bench\r\nContent-Type: text/plain\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        resp = b""
        answered = False
        waiting = set(bufs)
        per_note = []
        # Events are read while the POST is still in flight (a cluster with
        # --ack all answers only after the peers have the note).
        while waiting or not answered:
            if time.monotonic() > deadline:
                sys.exit("timed out: %d subscribers missed note %d" % (len(waiting), i))
            for key, _ in sel.select(timeout=5):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    sys.exit("a connection closed")
                if s is poster:
                    resp += data
                    if b"\r\n\r\n" in resp and resp.split(b"\r\n\r\n", 1)[1].endswith(b"}\n"):
                        if not resp.startswith(b"HTTP/1.1 201"):
                            sys.exit("POST failed: %r" % resp[:200])
                        answered = True
                        post_delays.append(time.monotonic() - started)
                    continue
                bufs[s] += data
                if s in waiting and marker in bufs[s]:
                    waiting.discard(s)
                    per_note.append(time.monotonic() - started)
                    bufs[s] = bufs[s].split(marker, 1)[1]
        delays.extend(per_note)
        worst.append(max(per_note))
    delays.sort()
    worst.sort()
    post_delays.sort()

    def pct(xs, p):
        return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3

    print("subscribers=%d notes=%d deliveries=%d" % (subscribers, notes, len(delays)))
    print("POST sent -> event received: p50 %.2f ms, p99 %.2f ms, max %.2f ms"
          % (pct(delays, 0.5), pct(delays, 0.99), delays[-1] * 1e3))
    print("per note, last subscriber served: median %.2f ms, max %.2f ms"
          % (pct(worst, 0.5), worst[-1] * 1e3))
    print("POST sent -> 201 received: median %.2f ms, max %.2f ms"
          % (pct(post_delays, 0.5), post_delays[-1] * 1e3))


if __name__ == "__main__":
    main()
