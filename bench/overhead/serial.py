"""The c=1 client: one keep-alive connection, requests sent one after another, each timed to the
microsecond (hey's CSV rounds to 0.1 ms, a fifth of a 0.5 ms figure, too coarse to judge a 1.3x
ratio at c=1). Raw HTTP/1.1 on a socket, so the client adds little and the same to every target."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import BenchError
from bench.overhead.hey import Run


def run(url: str, key: str, body: Path, n: int, timeout_s: float = 20) -> Run:
    """N POSTs of BODY (JSON) with `Authorization: Bearer KEY`, one at a time on one connection
    (a new one after a transport error or a `Connection: close`); latencies from the request's
    first byte sent to its answer's last byte read. A request with no answer counts as missing."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise BenchError(f"serial.run wants http://host:port/path, got {url}")
    payload = body.read_bytes()
    request = (f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\n"
               f"Host: {parts.hostname}:{parts.port}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
               ).encode() + payload
    lat, status, offset, missing = [], [], [], 0
    conn: socket.socket | None = None
    t0 = time.perf_counter_ns()
    try:
        for _ in range(n):
            if conn is None:
                conn = socket.create_connection((parts.hostname, parts.port), timeout=timeout_s)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.perf_counter_ns()
            try:
                conn.sendall(request)
                code, keep = read_answer(conn)
            except (OSError, ValueError):
                conn.close()
                conn = None
                missing += 1
                continue
            end = time.perf_counter_ns()
            lat.append((end - start) / 1e6)
            status.append(code)
            offset.append((start - t0) / 1e9)
            if not keep:
                conn.close()
                conn = None
    finally:
        if conn is not None:
            conn.close()
    return Run(lat, status, offset, missing)


def read_answer(conn: socket.socket) -> tuple[int, bool]:
    """Reads one answer whole (Content-Length or chunked); returns its status and whether the
    connection stays open. ValueError on anything malformed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv(conn)
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    code = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    keep = headers.get("connection") != "close"
    if headers.get("transfer-encoding") == "chunked":
        while not chunked_done(rest):
            rest += recv(conn)
    else:
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            rest += recv(conn)
    return code, keep


def chunked_done(data: bytes) -> bool:
    """Whether DATA holds a whole chunked body (its last, empty chunk included)."""
    i = 0
    while True:
        end = data.find(b"\r\n", i)
        if end < 0:
            return False
        size = int(data[i:end].split(b";")[0], 16)
        if size == 0:
            return data.endswith(b"\r\n\r\n")
        i = end + 2 + size + 2
        if i > len(data):
            return False


def recv(conn: socket.socket) -> bytes:
    chunk = conn.recv(65536)
    if not chunk:
        raise ValueError("connection closed mid-answer")
    return chunk
