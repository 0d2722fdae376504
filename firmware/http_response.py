# A response of the device's HTTP client: status line and headers read a byte at a time into
# one fixed line buffer (the socket's readinto never returns short, so reading ahead could block
# on a kept-open connection); the body streamed straight from the socket into the caller's
# buffer, framed by Content-Length, chunked encoding or the server's close. A steady-state
# readinto allocates nothing.
import json
import time

from firmware import http_pace
from firmware.http_errors import HttpError, SlowBody, Timeout, io_error

try:
    from firmware import log as _logmod
    _log = _logmod.get("http")
except ImportError:  # used standalone
    _log = None

MAX_LINE = 1024         # longest status/header/chunk-size line accepted
MAX_HEADERS = 48        # header (and trailer) lines per response

_NONE = 0      # no body (HEAD, 204, 304) or body fully read
_LENGTH = 1    # Content-Length framing
_CHUNKED = 2   # Transfer-Encoding: chunked
_CLOSE = 3     # body runs until the server closes


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
            raise SlowBody(e.reason)
        except OSError as e:
            self.close()
            raise io_error(e, "read")
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
