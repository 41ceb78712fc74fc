#!/usr/bin/env python3
"""Light probes of the API's front door, as an outside client would send them.

Usage: scripts/probe-front-door.py [BASE_URL] [probe ...]
  BASE_URL defaults to http://127.0.0.1:8080; OFFLOAD_TOKEN, if set, is sent as a Bearer token.
  Probes: request-id, slowloris, idle, flood, cross-site (default: all of them).
Prints one line of figures per probe. Needs only the Python standard library.
"""

import http.client
import os
import socket
import sys
import threading
import time
import urllib.parse

BASE = "http://127.0.0.1:8080"
TOKEN = os.environ.get("OFFLOAD_TOKEN", "")


def target():
    u = urllib.parse.urlparse(BASE)
    return u.hostname or "127.0.0.1", u.port or 80


def request(method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection: (status, seconds, response headers)."""
    host, port = target()
    h = {"content-type": "application/json"}
    if TOKEN:
        h["authorization"] = f"Bearer {TOKEN}"
    h.update(headers or {})
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request(method, path, body=body, headers=h)
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, time.monotonic() - started, dict(response.getheaders())
    except (OSError, http.client.HTTPException):
        return None, time.monotonic() - started, {}


def submit(headers=None):
    return request("POST", "/jobs", b'{"kind":"noop","payload":{}}', headers)


def probe_request_id(seconds=20.0):
    """A 150 KB x-request-id every 250 ms beside normal submits."""
    stop = time.monotonic() + seconds
    hostile = []

    def attack():
        while time.monotonic() < stop:
            hostile.append(submit({"x-request-id": "a" * 150_000})[0])
            time.sleep(0.25)

    t = threading.Thread(target=attack)
    t.start()
    codes = {}
    while time.monotonic() < stop:
        code = submit()[0]
        codes[code] = codes.get(code, 0) + 1
        time.sleep(0.05)
    t.join()
    total = sum(codes.values())
    failed = total - codes.get(202, 0)
    print(f"request-id: {failed} of {total} normal submits failed {codes}; hostile answers {sorted(set(hostile), key=str)}")


def probe_slowloris(n=200, seconds=30.0):
    """n connections sending a header byte a second; how many are still open after `seconds`."""
    host, port = target()
    socks = []
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"POST /jobs HTTP/1.1\r\nHost: probe\r\nX-Slow: ")
            socks.append(s)
        except OSError:
            pass
    started = time.monotonic()
    latencies = []
    while time.monotonic() - started < seconds:
        for s in list(socks):
            try:
                s.sendall(b"a")
            except OSError:
                socks.remove(s)
        code, took, _ = submit()
        latencies.append((code, took))
        time.sleep(1.0)
    open_ = 0
    for s in socks:
        try:
            s.sendall(b"a")
            s.settimeout(0.01)
            try:
                if s.recv(1) == b"":
                    continue
            except socket.timeout:
                pass
            open_ += 1
        except OSError:
            pass
        finally:
            s.close()
    worst = max(t for _, t in latencies) if latencies else 0
    codes = sorted({str(c) for c, _ in latencies})
    print(f"slowloris: {open_} of {n} still open after {seconds:.0f} s; normal submits {codes}, slowest {worst*1000:.0f} ms")


def probe_idle(n=1000):
    """n idle connections, then a probe and a submit."""
    host, port = target()
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((host, port), timeout=5))
        except OSError:
            break
    live = request("GET", "/health/live", timeout=5)
    sub = submit()
    for s in socks:
        s.close()
    print(
        f"idle: {len(socks)} idle sockets open; /health/live {live[0]} in {live[1]*1000:.0f} ms; "
        f"submit {sub[0]} in {sub[1]*1000:.0f} ms"
    )


def probe_flood(clients=4, seconds=10.0):
    """clients submitting as fast as they can."""
    stop = time.monotonic() + seconds
    results = []
    lock = threading.Lock()

    def run():
        host, port = target()
        while time.monotonic() < stop:
            r = submit()
            with lock:
                results.append(r)

    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = {}
    for code, _, _ in results:
        codes[code] = codes.get(code, 0) + 1
    refused = sorted(t for c, t, _ in results if c in (429, 503))
    p99 = refused[int(len(refused) * 0.99) - 1] * 1000 if refused else 0
    print(f"flood: {len(results)} submits in {seconds:.0f} s {codes}; refusals p99 {p99:.0f} ms")


def probe_cross_site():
    """A form post from another site's page."""
    code, _, _ = request(
        "POST",
        "/jobs",
        b"kind=noop&payload=%7B%7D",
        {"content-type": "application/x-www-form-urlencoded", "origin": "http://evil.example", "accept": "text/html"},
    )
    print(f"cross-site form post: {code}")


PROBES = {
    "request-id": probe_request_id,
    "slowloris": probe_slowloris,
    "idle": probe_idle,
    "flood": probe_flood,
    "cross-site": probe_cross_site,
}

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0].startswith("http"):
        BASE = args.pop(0)
    for name in args or list(PROBES):
        PROBES[name]()
