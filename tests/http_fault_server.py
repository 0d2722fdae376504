"""A tiny fault-injecting HTTP/1.1 server for tests (CPython, threads, raw sockets).

Usage::

    from http_fault_server import start, Reply, redirect

    def handler(req):                      # req: Request (method, target, headers, body, ...)
        if req.target == "/old":
            return redirect("/new")        # 302 with a Location header
        return Reply(200, b"hello", mode="chunked", chunk_size=2)

    port, stop = start(handler)            # listening on 127.0.0.1:port
    ...
    stop()                                 # closes everything, releases stalled connections

The handler gets each parsed request and returns one of

* a ``Reply`` -- status, headers and body, framed by ``mode``:
  ``"length"`` (Content-Length, the default), ``"chunked"`` (optionally with chunk extensions and
  trailers) or ``"close"`` (no length: the body ends when the connection closes);
  faults: ``stall_after=N`` sends the first N bytes then goes silent (connection kept open),
  ``close_after=N`` sends the first N bytes then closes; N counts body bytes on the wire
  (chunk framing included) unless ``count_from="start"``, which counts from the status line.
  ``content_length=`` overrides the declared length (to lie about it).
* ``bytes`` -- sent verbatim, then the connection is closed;
* ``None`` -- the handler wrote to ``req.conn`` itself (the connection is closed afterwards).

``start(handler, tls=ssl_context)`` serves HTTPS with a CPython server-side SSLContext.
Every request is also appended to ``stop.requests`` for later assertions.
"""
import socket
import ssl
import threading


class Request:
    def __init__(self, conn, method, target, version, headers, body, raw_head):
        self.conn = conn
        self.method = method
        self.target = target          # request target exactly as sent (path + query, verbatim)
        self.version = version
        self.headers = headers        # lower-case name -> value
        self.body = body
        self.raw_head = raw_head      # the request head bytes as received


class Reply:
    def __init__(self, status=200, body=b"", headers=None, reason=None, mode="length",
                 chunk_size=None, chunk_ext=False, trailers=None, stall_after=None,
                 close_after=None, count_from="body", content_length=None):
        self.status = status
        self.body = body.encode() if isinstance(body, str) else bytes(body)
        self.headers = list((headers or {}).items())
        self.reason = reason or _REASONS.get(status, "Status")
        self.mode = mode
        self.chunk_size = chunk_size
        self.chunk_ext = chunk_ext
        self.trailers = trailers
        self.stall_after = stall_after
        self.close_after = close_after
        self.count_from = count_from
        self.content_length = content_length

    def wire(self):
        """(head bytes, body bytes as framed on the wire)."""
        head = ["HTTP/1.1 %d %s" % (self.status, self.reason)]
        head += ["%s: %s" % kv for kv in self.headers]
        if self.mode == "chunked":
            head.append("Transfer-Encoding: chunked")
            size = self.chunk_size or max(1, len(self.body))
            parts = []
            for i in range(0, len(self.body), size):
                piece = self.body[i:i + size]
                ext = ";name=value;x" if self.chunk_ext else ""
                parts.append(b"%x%s\r\n%s\r\n" % (len(piece), ext.encode(), piece))
            parts.append(b"0" + (b";last" if self.chunk_ext else b"") + b"\r\n")
            for k, v in (self.trailers or {}).items():
                parts.append(("%s: %s\r\n" % (k, v)).encode())
            parts.append(b"\r\n")
            body = b"".join(parts)
        elif self.mode == "length":
            n = len(self.body) if self.content_length is None else self.content_length
            head.append("Content-Length: %d" % n)
            body = self.body
        elif self.mode == "close":
            body = self.body
        else:
            raise ValueError("mode must be length, chunked or close")
        head.append("Connection: close")
        return ("\r\n".join(head) + "\r\n\r\n").encode(), body


def redirect(location, status=302, body=b""):
    return Reply(status, body, headers={"Location": location})


_REASONS = {200: "OK", 206: "Partial Content", 301: "Moved Permanently", 302: "Found",
            303: "See Other", 307: "Temporary Redirect", 308: "Permanent Redirect",
            400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}


def _read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        got = conn.recv(4096)
        if not got:
            return None
        data += got
        if len(data) > 65536:
            return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0") or 0)
    while len(rest) < n:
        got = conn.recv(4096)
        if not got:
            break
        rest += got
    return Request(conn, method, target, version, headers, rest[:n], head + b"\r\n\r\n")


class _Server:
    def __init__(self, handler, tls=None):
        self.handler = handler
        self.tls = tls
        self.requests = []
        self.errors = []
        self.stopping = threading.Event()
        self.conns = set()
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)  # accept() wakes up regularly to notice stop()
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError) as e:  # e.g. the client rejected our certificate
                    self.errors.append(e)
                    return
                with self.lock:
                    self.conns.add(conn)
            req = _read_request(conn)
            if req is None:
                return
            self.requests.append(req)
            out = self.handler(req)
            if isinstance(out, Reply):
                self._send_reply(conn, out)
            elif out is not None:
                conn.sendall(out)
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _send_reply(self, conn, r):
        head, body = r.wire()
        data = head + body
        base = len(head) if r.count_from == "body" else 0
        if r.stall_after is not None:
            conn.sendall(data[:base + r.stall_after])
            self.stopping.wait(30)  # silent but open until the test stops the server
        elif r.close_after is not None:
            conn.sendall(data[:base + r.close_after])
        else:
            conn.sendall(data)

    def stop(self):
        self.stopping.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in list(self.conns):
                try:
                    c.close()
                except OSError:
                    pass
        self.thread.join(2)


def start(handler, tls=None):
    """Serve `handler` on 127.0.0.1; return (port, stop). stop.requests lists the requests seen."""
    srv = _Server(handler, tls)

    def stop():
        srv.stop()
    stop.requests = srv.requests
    stop.errors = srv.errors
    stop.server = srv
    return srv.port, stop
