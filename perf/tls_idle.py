#!/usr/bin/env python3
"""Memory per idle TLS keep-alive connection, for perf/tls.

Against a running HTTPS server (loopback only): warms it with WARM
connections (handshake, one GET, close), reads the server's RSS (the sum
of VmRSS over PIDS: nginx's master and worker, or uringnotes' one
process), then opens N connections that each complete a full TLS
handshake and one keep-alive `GET PATH`, read the whole response and then
stay open, idle. After a pause the RSS is read again; the growth divided
by N is what the server keeps per idle TLS connection. The connections
are closed before exiting. Bounded: N is at most 20,000 and every socket
operation times out after 10 s.

Prints one JSON object: rss_before_kib, rss_after_kib, bytes_per_conn,
and the protocol version and cipher the server negotiated.

Usage: perf/tls_idle.py HOST:PORT CAFILE PATH N PIDS [WARM]
  PIDS: comma-separated process ids whose VmRSS is summed.
"""
import json
import socket
import ssl
import sys
import time

N_MAX = 20_000
# Time for the server to finish with the last connection's request (and
# for its allocator to settle) before the second reading.
SETTLE_S = 1.0


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(16384)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(16384)
        if not chunk:
            raise ConnectionError("closed in the response body")
        body += chunk
    return status


def open_one(ctx, host, port, request):
    raw = socket.create_connection((host, port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = ctx.wrap_socket(raw, server_hostname=host)
    s.sendall(request)
    status = read_response(s)
    if status != 200:
        raise RuntimeError(f"status {status}")
    return s


def main():
    addr, cafile, path, n, pids = sys.argv[1:6]
    warm = int(sys.argv[6]) if len(sys.argv) > 6 else 50
    host, port = addr.rsplit(":", 1)
    port = int(port)
    n = min(int(n), N_MAX)
    pids = [int(p) for p in pids.split(",") if p]
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()

    for _ in range(warm):
        open_one(ctx, host, port, request).close()
    time.sleep(SETTLE_S)
    before = rss_kib(pids)
    socks = []
    try:
        for _ in range(n):
            socks.append(open_one(ctx, host, port, request))
        time.sleep(SETTLE_S)
        after = rss_kib(pids)
        version, cipher = socks[0].version(), socks[0].cipher()[0]
    finally:
        for s in socks:
            s.close()
    print(json.dumps({
        "connections": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_conn": (after - before) * 1024 / n,
        "version": version,
        "cipher": cipher,
    }))


if __name__ == "__main__":
    main()
