#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Pipelined HTTP/1.1 requests on blockd's control socket (RFC 9112,
section 9.3.2: a server answers pipelined requests in the order received).

Usage: api_pipeline.py CONTROL-SOCKET TIME-SCALE

Volumes "a" and "b" exist, "c" and "d" do not.  Each case uses a raw
socket, so the bytes go out exactly as written here:

- 3 GETs, a POST and a GET of what the POST made, in one write: five
  answers, in order (the last GET sees the POST's volume).
- A GET and a POST sent in pieces, with pauses, the cuts inside the request
  line, inside a header, between the headers and the body, and inside the
  body: both answered, in order.
- A GET followed, in the same write, by a malformed request: the GET is
  answered, then the server answers 400 or closes the connection.
- Then a new connection is still served.

Every read waits at most 10 s (times TIME-SCALE): a request left
unanswered fails the test instead of hanging it.
"""
import json
import socket
import sys
import time

SOCK, SCALE = sys.argv[1], int(sys.argv[2])
WAIT = 10 * SCALE


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def request(method, path, body=None):
    head = "%s %s HTTP/1.1\r\nHost: localhost\r\n" % (method, path)
    if body is None:
        return (head + "\r\n").encode()
    data = json.dumps(body).encode()
    head += "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
    return head.encode() + data


class Conn:
    def __init__(self, what):
        self.what = what
        self.buf = b""
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(WAIT)
        self.s.connect(SOCK)

    def fill(self, which):
        """More bytes into buf; False at EOF.  Fails after WAIT s of silence."""
        try:
            chunk = self.s.recv(65536)
        except socket.timeout:
            fail("%s, %s: no answer within %d s" % (self.what, which, WAIT))
        except ConnectionResetError:
            return False
        self.buf += chunk
        return bool(chunk)

    def response(self, which):
        """The next response as (status, body bytes), or None at a clean EOF
        before its first byte."""
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(which):
                if self.buf:
                    fail("%s, %s: EOF inside the headers: %r" % (self.what, which, self.buf[:200]))
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            fail("%s, %s: bad status line %r" % (self.what, which, lines[0]))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            fail("%s, %s: no Content-Length in %r" % (self.what, which, head[:300]))
        n = int(headers["content-length"])
        while len(self.buf) < n:
            if not self.fill(which):
                fail("%s, %s: EOF inside the body" % (self.what, which))
        body, self.buf = self.buf[:n], self.buf[n:]
        return int(parts[1]), body

    def expect(self, which, status, name=None):
        r = self.response(which)
        if r is None:
            fail("%s: the connection closed before the answer to %s" % (self.what, which))
        if r[0] != status:
            fail("%s, %s: status %d, not %d: %r" % (self.what, which, r[0], status, r[1][:200]))
        if name is not None:
            got = json.loads(r[1]).get("name")
            if got != name:
                fail("%s, %s: answered for volume %r, not %r" % (self.what, which, got, name))

    def close(self):
        self.s.close()


# --- 3 GETs, a POST, and a GET of the POST's volume, in one write.
c = Conn("one write")
c.s.sendall(
    request("GET", "/v1/volumes/a")
    + request("GET", "/v1/volumes/b")
    + request("GET", "/v1/volumes/nosuch")
    + request("POST", "/v1/volumes", {"name": "c", "size": "1M"})
    + request("GET", "/v1/volumes/c")
)
c.expect("GET a", 200, "a")
c.expect("GET b", 200, "b")
c.expect("GET nosuch", 404)
c.expect("POST c", 201, "c")
c.expect("GET c after the POST", 200, "c")
c.close()

# --- A GET and a POST in pieces; each cut is where a parser could lose its place.
get = request("GET", "/v1/volumes/b")
post = request("POST", "/v1/volumes", {"name": "d", "size": "2M"})
body_at = len(get) + post.index(b"\r\n\r\n") + 4
data = get + post
cuts = [5, len(get) + 3, len(get) + 30, body_at, body_at + 7, len(data)]
c = Conn("split writes")
prev = 0
for cut in cuts:
    c.s.sendall(data[prev:cut])
    prev = cut
    time.sleep(0.05)
c.expect("GET b", 200, "b")
c.expect("POST d (split)", 201, "d")
c.close()

# --- A GET, then a malformed request (a header line without a colon).
c = Conn("malformed second request")
c.s.sendall(
    request("GET", "/v1/volumes/a")
    + b"GET /v1/volumes HTTP/1.1\r\nHost: localhost\r\nno colon here\r\n\r\n"
)
c.expect("GET a", 200, "a")
r = c.response("the malformed request")
if r is not None and r[0] != 400:
    fail("malformed request answered %d, not 400: %r" % (r[0], r[1][:200]))
c.close()

# --- The daemon still serves.
c = Conn("a new connection")
c.s.sendall(request("GET", "/v1/volumes/d"))
c.expect("GET d", 200, "d")
c.close()
print("pipeline: all answered")
