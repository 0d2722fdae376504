# HTTP/1.1 client for the device: one request per connection ("Connection: close"), response
# bodies streamed straight into the caller's buffer (Content-Length, chunked or until close),
# redirects, socket timeouts and TLS with CA verification.
#
# Memory: header and chunk-size lines are read a byte at a time into one fixed line buffer (the
# socket's readinto never returns short, so reading ahead could block on a kept-open connection);
# body bytes go directly from the socket into the caller's buffer, so a steady-state readinto
# allocates nothing.
#
# Error reasons never contain a URL: pre-signed download URLs carry secrets in their query.
import errno
import json
import socket
import time

from firmware import http_pace, pem

try:
    from firmware import log as _logmod
    _log = _logmod.get("http")
except ImportError:  # used standalone
    _log = None

MAX_LINE = 1024         # longest status/header/chunk-size line accepted
MAX_HEADERS = 48        # header (and trailer) lines per response
REDIRECT_CODES = (301, 302, 303, 307, 308)
# Socket timeouts: ETIMEDOUT is 110 on Linux and 116 on the esp32 port (newlib errno,
# MICROPY_USE_INTERNAL_ERRNO 0 in ports/esp32/mpconfigport.h:71; modsocket.c:668 reports a
# timed-out read as MP_ETIMEDOUT); EAGAIN 11. Through TLS the same errno arrives negated:
# extmod/modtls_mbedtls.c _mbedtls_ssl_recv returns -err and socket_read (line 786) hands
# mbedtls' code on unchanged, so a TLS read timeout is OSError(-116) on the board, -110 here.
_TIMEOUT_ERRNOS = (errno.ETIMEDOUT, errno.EAGAIN, 110, 116, 11,
                   -errno.ETIMEDOUT, -110, -116)

_NONE = 0      # no body (HEAD, 204, 304) or body fully read
_LENGTH = 1    # Content-Length framing
_CHUNKED = 2   # Transfer-Encoding: chunked
_CLOSE = 3     # body runs until the server closes

_warned_unverified = False


class HttpError(Exception):
    permanent = False  # True: the same request can never succeed; do not retry it

    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Timeout(HttpError):
    pass


class Permanent(HttpError):
    """A URL or redirect this client will never follow (bad URL, credentials in it, an
    unsupported scheme, too many redirects, https -> http): retrying cannot help."""
    permanent = True


def _errtext(e):
    a = e.args
    if len(a) > 1:  # mbedtls errors: (code, "MBEDTLS_ERR_...")
        return "%s (%s)" % (a[1], a[0])
    n = a[0] if a else 0
    name = errno.errorcode.get(n) if isinstance(n, int) else None
    return name or str(n)


def _is_timeout(e):
    return bool(e.args) and e.args[0] in _TIMEOUT_ERRNOS


def _io_error(e, what):
    if _is_timeout(e):
        return Timeout(what + " timed out")
    return HttpError(what + " failed: " + _errtext(e))


def parse_url(url):
    """Split an http(s) URL into (scheme, host, port, path_with_query); path and query verbatim."""
    i = url.find("://")
    if i <= 0:
        raise Permanent("bad URL")
    scheme = url[:i].lower()
    if scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    else:
        raise Permanent("unsupported URL scheme")
    rest = url[i + 3:]
    h = rest.find("#")
    if h >= 0:  # a fragment is never sent
        rest = rest[:h]
    end = len(rest)
    for c in "/?":
        j = rest.find(c)
        if 0 <= j < end:
            end = j
    netloc = rest[:end]
    path = rest[end:]
    if not path or path[0] == "?":
        path = "/" + path
    for c in path:
        if c <= " " or c == "\x7f":  # would break the request line; not re-encoded on purpose
            raise Permanent("bad URL")
    if "@" in netloc:
        raise Permanent("credentials in URL not supported")
    if netloc.startswith("["):  # IPv6 literal
        j = netloc.find("]")
        if j < 0:
            raise Permanent("bad URL")
        host = netloc[1:j]
        tail = netloc[j + 1:]
    else:
        j = netloc.rfind(":")
        host = netloc if j < 0 else netloc[:j]
        tail = "" if j < 0 else netloc[j:]
    if tail:
        if tail[0] != ":" or not tail[1:].isdigit():
            raise Permanent("bad URL port")
        port = int(tail[1:])
        if not 0 < port < 65536:
            raise Permanent("bad URL port")
    if not host:
        raise Permanent("bad URL host")
    return scheme, host, port, path


def _origin(url):
    i = url.find("://")
    j = len(url)
    for c in "/?#":
        k = url.find(c, i + 3)
        if 0 <= k < j:
            j = k
    return url[:j]


def _remove_dots(path):
    out = []
    segs = path.split("/")
    for s in segs:
        if s == ".":
            continue
        if s == "..":
            if len(out) > 1:
                out.pop()
            continue
        out.append(s)
    if segs[-1] in (".", ".."):
        out.append("")
    r = "/".join(out)
    return r if r.startswith("/") else "/" + r


def resolve(base, location):
    """The absolute URL a Location header points to, relative to `base`."""
    loc = location.strip()
    h = loc.find("#")
    if h >= 0:
        loc = loc[:h]
    i = loc.find("://")
    if i > 0 and loc[:i].isalpha():
        return loc
    if loc.startswith("//"):
        return base[:base.find("://") + 1] + loc
    origin = _origin(base)
    if loc.startswith("/"):
        return origin + loc
    path = parse_url(base)[3]
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    if loc.startswith("?") or not loc:
        return origin + path + loc
    q = loc.find("?")
    rel, query = (loc, "") if q < 0 else (loc[:q], loc[q:])
    return origin + _remove_dots(path[:path.rfind("/") + 1] + rel) + query


def _connect(host, port, timeout_ms):
    try:
        addrs = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise HttpError("connect failed: DNS lookup for %s failed (%s)" % (host, _errtext(e)))
    if not addrs:
        raise HttpError("connect failed: no address for %s" % host)
    err = None
    for ai in addrs:
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            s.settimeout(timeout_ms / 1000)
            s.connect(ai[-1])
            return s
        except OSError as e:
            s.close()
            err = e
    if _is_timeout(err) or err.args[0] == errno.EINPROGRESS:
        raise Timeout("connect to %s:%d timed out" % (host, port))
    raise HttpError("connect failed: %s:%d %s" % (host, port, _errtext(err)))


def _warn_unverified():
    global _warned_unverified
    if not _warned_unverified:
        _warned_unverified = True
        msg = "TLS certificate verification is OFF (config tls.verify=false)"
        if _log:
            _log.warning(msg)
        else:
            print("WARNING http: " + msg)


def _tls_wrap(sock, host, tls):
    import ssl
    verify = True if tls is None else tls.get("verify", True)
    ca = None if tls is None else tls.get("ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if not ca:
            raise HttpError("tls: verification on but no CA configured")
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ders = pem.ders(ca)
        except ValueError as e:
            raise HttpError("tls: %s" % e)
        for d in ders:
            try:
                ctx.load_verify_locations(cadata=d)
            except (ValueError, OSError):
                raise HttpError("tls: invalid CA certificate")
    else:
        ctx.verify_mode = ssl.CERT_NONE
        _warn_unverified()
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except OSError as e:
        raise _io_error(e, "tls handshake")
    except ValueError as e:  # mbedtls reports verification failures as ValueError("\n<text>\n")
        raise HttpError("tls: certificate verification failed: " + str(e).strip())


def _send(sock, data):
    mv = memoryview(data)
    off = 0
    while off < len(data):
        try:
            n = sock.write(mv[off:])
        except OSError as e:
            raise _io_error(e, "send")
        if not n:
            raise Timeout("send timed out")
        off += n


def _check_token(s):
    if "\r" in s or "\n" in s:
        raise HttpError("bad header")
    return s


def _encode_body(body):
    if body is None:
        return None, None
    if isinstance(body, dict) or isinstance(body, list):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, str):
        return body.encode(), None
    return body, None


def _build_head(method, scheme, host, port, path, headers, data, ctype, range_start):
    hp = "[" + host + "]" if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        hp = "%s:%d" % (hp, port)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + hp]
    seen = set()
    if headers:
        for k in headers:
            lk = k.lower()
            if lk in ("host", "connection", "content-length", "transfer-encoding"):
                continue  # we own the framing
            seen.add(lk)
            lines.append(_check_token(k) + ": " + _check_token(str(headers[k])))
    if "user-agent" not in seen:
        lines.append("User-Agent: micropython-http")
    if ctype and "content-type" not in seen:
        lines.append("Content-Type: " + ctype)
    if data is not None or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: %d" % (0 if data is None else len(data)))
    if range_start is not None and "range" not in seen:
        lines.append("Range: bytes=%d-" % range_start)
    lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


class Response:
    def __init__(self, sock, url, method):
        self._sock = sock
        self.url = url
        self._method = method
        self._line = bytearray(MAX_LINE)
        self._one = bytearray(1)
        self._mode = _NONE
        self._remaining = 0      # Content-Length left, or bytes left in the current chunk
        self._crlf_due = False   # a chunk's data was consumed; its CRLF is next
        self.status = None
        self.reason = ""
        self.headers = {}
        self.length = None

    # -- low level ----------------------------------------------------------------------------
    def _read(self, buf, n):
        try:
            got = self._sock.readinto(buf, n)
        except http_pace.Slow as e:  # a paced body (deadline / minimum rate): say so, give up
            self.close()
            if _log:
                _log.warning("%s; giving up", e.reason)
            raise Timeout(e.reason)
        except OSError as e:
            self.close()
            raise _io_error(e, "read")
        if got is None:  # some ports report a timeout as "no data in non-blocking mode"
            self.close()
            raise Timeout("read timed out")
        return got

    def _readline(self, eof_reason, deadline=None):
        """Read one LF-terminated line into self._line; return its length without CR/LF."""
        sock = self._sock
        if sock is None:
            raise HttpError(eof_reason)
        one = self._one
        line = self._line
        n = 0
        while True:
            if deadline is not None and time.ticks_diff(deadline, time.ticks_ms()) < 0:
                self.close()
                raise Timeout("response headers timed out")
            if not self._read(one, 1):
                self.close()
                raise HttpError(eof_reason)
            c = one[0]
            if c == 10:
                if n and line[n - 1] == 13:
                    n -= 1
                return n
            if n >= MAX_LINE:
                self.close()
                raise HttpError("response line too long")
            line[n] = c
            n += 1

    def _text(self, n):
        b = bytes(self._line[:n])
        try:
            return b.decode()
        except UnicodeError:
            return "".join(chr(c) if c < 128 else "?" for c in b)

    # -- head ---------------------------------------------------------------------------------
    def _read_head(self, timeout_ms):
        deadline = time.ticks_add(time.ticks_ms(), timeout_ms)
        while True:
            n = self._readline("connection closed before response", deadline)
            if n == 0 and self.status is None:
                continue  # tolerate stray blank lines before the status line
            line = self._text(n)
            parts = line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or len(parts[1]) != 3 \
                    or not parts[1].isdigit():
                self.close()
                raise HttpError("bad status line")
            self.status = int(parts[1])
            self.reason = parts[2] if len(parts) > 2 else ""
            self.headers = self._read_fields(deadline, "connection closed in headers")
            if 100 <= self.status < 200 and self.status != 101:
                continue  # interim response (100 Continue etc.): the real one follows
            break
        self._frame()

    def _read_fields(self, deadline, eof_reason):
        headers = {}
        last = None
        count = 0
        while True:
            n = self._readline(eof_reason, deadline)
            if n == 0:
                return headers
            count += 1
            if count > MAX_HEADERS:
                self.close()
                raise HttpError("too many headers")
            line = self._text(n)
            if line[0] in " \t" and last:  # obsolete line folding
                headers[last] = headers[last] + " " + line.strip()
                continue
            i = line.find(":")
            if i <= 0:
                self.close()
                raise HttpError("bad header line")
            name = line[:i].strip().lower()
            value = line[i + 1:].strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
            last = name

    def _frame(self):
        st = self.status
        te = self.headers.get("transfer-encoding", "").lower()
        if self._method == "HEAD" or st in (204, 304):
            self.length = 0
            self._finish()
        elif te and te.split(",")[-1].strip() == "chunked":
            self._mode = _CHUNKED
        elif "content-length" in self.headers:
            vals = [v.strip() for v in self.headers["content-length"].split(",")]
            v = vals[0]
            if not v.isdigit() or len(v) > 12 or any(x != v for x in vals):
                self.close()
                raise HttpError("bad content-length")
            self.length = int(v)
            self._remaining = self.length
            self._mode = _LENGTH
            if self.length == 0:
                self._finish()
        else:
            self._mode = _CLOSE

    # -- body ---------------------------------------------------------------------------------
    def readinto(self, buf):
        """Read body bytes into buf (up to len(buf)); 0 at the end of the body."""
        mode = self._mode
        if mode == _LENGTH:
            got = self._read_framed(buf)
            if got and self._remaining == 0:
                self._finish()
            return got
        if mode == _CHUNKED:
            return self._readinto_chunked(buf)
        if mode == _CLOSE:
            n = len(buf)
            if n == 0:
                return 0
            got = self._read(buf, n)
            if not got:
                self._finish()
            return got
        return 0

    def _readinto_chunked(self, buf):
        rem = self._remaining
        if rem == 0:
            if self._crlf_due:
                if self._readline("body truncated") != 0:
                    self.close()
                    raise HttpError("bad chunk framing")
                self._crlf_due = False
            rem = self._chunk_size(self._readline("body truncated"))
            if rem == 0:
                self._read_fields(None, "body truncated")  # trailers: read and dropped
                self._finish()
                return 0
        self._remaining = rem
        got = self._read_framed(buf)
        if got and self._remaining == 0:
            self._crlf_due = True
        return got

    def _read_framed(self, buf):
        """Up to len(buf) of the `_remaining` bytes the framing promises; EOF before them is
        a truncated body."""
        rem = self._remaining
        n = len(buf)
        if n > rem:
            n = rem
        if n <= 0:
            return 0
        got = self._read(buf, n)
        if not got:
            self.close()
            raise HttpError("body truncated")
        self._remaining = rem - got
        return got

    def _chunk_size(self, n):
        # Parsed in place (no allocation); stops at a chunk extension (";...") or whitespace.
        line = self._line
        v = 0
        digits = 0
        for i in range(n):
            c = line[i]
            if 48 <= c <= 57:
                d = c - 48
            elif 97 <= c <= 102:
                d = c - 87
            elif 65 <= c <= 70:
                d = c - 55
            elif c == 59 or c == 32 or c == 9:
                break
            else:
                digits = 0
                break
            if v > 0x7FFFFF:  # > 128 MiB per chunk: refuse before it needs a big int
                digits = 0
                break
            v = v * 16 + d
            digits += 1
        if not digits:
            self.close()
            raise HttpError("bad chunk size")
        return v

    def read_all(self, limit=16384):
        """The whole (small) body as bytes; HttpError when it exceeds `limit`."""
        if self.length is not None and self.length > limit:
            self.close()
            raise HttpError("body too large", self.status)
        out = bytearray()
        chunk = bytearray(512)
        mv = memoryview(chunk)
        while True:
            n = self.readinto(chunk)
            if not n:
                return bytes(out)
            if len(out) + n > limit:
                self.close()
                raise HttpError("body too large", self.status)
            out.extend(mv[:n])

    def json(self, limit=16384):
        data = self.read_all(limit)
        try:
            return json.loads(data)
        except Exception:
            raise HttpError("invalid JSON", self.status)

    def _finish(self):
        self._mode = _NONE
        self._remaining = 0
        self.close()

    def close(self):
        s = self._sock
        self._sock = None
        self._mode = _NONE
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _request_once(method, url, headers, data, ctype, timeout_ms, tls, range_start, deadline,
                  min_rate):
    scheme, host, port, path = parse_url(url)
    head = _build_head(method, scheme, host, port, path, headers, data, ctype, range_start)
    wait_ms = timeout_ms
    if deadline is not None:  # connect and headers get no more than what is left
        left = time.ticks_diff(deadline[0], time.ticks_ms())
        if left <= 0:
            raise Timeout(http_pace.deadline_reason(deadline[1]))
        if left < wait_ms:
            wait_ms = left
    sock = _connect(host, port, wait_ms)
    try:
        if scheme == "https":
            sock = _tls_wrap(sock, host, tls)
        _send(sock, head)
        if data:
            _send(sock, data)
        resp = Response(sock, url, method)
    except BaseException:
        sock.close()
        raise
    resp._read_head(wait_ms)  # closes the socket itself on failure
    if resp._sock is not None and (deadline is not None or min_rate is not None):
        resp._sock = http_pace.Paced(resp._sock, timeout_ms, deadline, min_rate)
    return resp


def request(method, url, headers=None, body=None, timeout_ms=10000, max_redirects=5, tls=None,
            range_start=None, deadline_ms=None, min_rate=None):
    """Send one request (following redirects) and return the Response with its body unread.

    body: bytes/str, or a dict/list sent as JSON. tls: {"verify": bool, "ca": PEM/DER or None};
    None means verify with no CA, which fails for https. The caller must close() the response.
    deadline_ms: the whole request, redirects and body included, must be done in that time.
    min_rate: (bytes_per_s, window_ms), the body must keep that pace (firmware/http_pace.py).
    Both end in Timeout with a reason saying which limit was hit.
    """
    method = method.upper()
    data, ctype = _encode_body(body)
    deadline = None
    if deadline_ms:
        deadline = (time.ticks_add(time.ticks_ms(), int(deadline_ms)), int(deadline_ms))
    hops = 0
    while True:
        resp = _request_once(method, url, headers, data, ctype, timeout_ms, tls, range_start,
                             deadline, min_rate)
        st = resp.status
        loc = resp.headers.get("location")
        if st not in REDIRECT_CODES or not loc:
            return resp
        resp.close()
        if hops >= max_redirects:
            raise Permanent("too many redirects", st)
        hops += 1
        new = resolve(url, loc)
        if url[:6].lower() == "https:" and new[:5].lower() == "http:" and \
                not (tls and tls.get("allow_http_redirect")):
            # it would send the request, and take the answer (MQTT credentials), in clear
            raise Permanent("https -> http redirect refused (tls.allow_http_redirect off)", st)
        if headers and _origin(new).lower() != _origin(url).lower():
            # credentials are for the origin that was asked, not wherever it points to
            headers = dict((k, v) for k, v in headers.items()
                           if k.lower() not in ("authorization", "cookie"))
        if st == 303 and method != "HEAD":
            method = "GET"
            data = ctype = None
            if headers:
                headers = dict((k, v) for k, v in headers.items() if k.lower() != "content-type")
        url = new
