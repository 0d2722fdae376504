# Source stage: the offered file over HTTP GET, continued with a Range request after a drop.
#
# Every source has the same face: open(pos) asks for the stream from byte `pos` and returns the
# offset it really starts at (pos, or an earlier one -- 0 when the source cannot continue there;
# the pipeline then skips what it already has), readinto(buf) -> n (0 at the end), finish()
# after the end, close(), length() (stream bytes to expect, or None), and wire / wire_total for
# progress when the stream is not what the offer counts (a .gz file, a patch).
#
# Checks of the stored file itself (the offer's md5/sha256 of a .gz file) are `taps`: they see
# every body byte once, in order, however often the body is fetched again.
from firmware import http_client, log
from firmware.update.errors import E_DOWNLOAD, E_INTEGRITY, Retry, UpdateError, short

_log = log.get("updater")


def content_range(value):
    """(start, total or None) of a "bytes start-end/total" header, or None when malformed."""
    try:
        v = value.strip()
        if not v.startswith("bytes "):
            return None
        span, total = v[6:].split("/")
        start = int(span.split("-")[0])
        return start, (None if total.strip() == "*" else int(total))
    except (ValueError, IndexError):
        return None


class _Empty:
    """The rest of a body that had already arrived in full."""

    def readinto(self, buf):
        return 0

    def close(self):
        pass


class Wrapper:
    """Base of a source over another's wire bytes (gzip, delta): progress counts those, against
    `wire_size` (the stored file's length, as the offer says)."""
    wire_size = None

    @property
    def wire(self):
        return self.inner.wire

    @property
    def wire_total(self):
        return self.wire_size


class HttpSource:
    resumable = True
    wire_total = None  # progress counts stream bytes

    def __init__(self, url, size=None, tls=None, timeout_ms=15000, taps=()):
        self.url = url
        self.size = size          # the stored file's length, as the offer says
        self.tls = tls
        self.timeout_ms = timeout_ms
        self.taps = taps
        self.tapped = 0           # body bytes the taps have seen
        self.wire = 0             # body offset of the next byte
        self.total = None         # body length, once a response said
        self.encoded = False      # Content-Encoding: gzip -- the body is not the file's bytes
        self._resp = None
        self._no_range = False

    def length(self):
        return None if self.encoded else self.total

    def open(self, pos):
        # Ranges of an encoded body mean nothing to an inflater; a server that refused one
        # gets none again.
        start = 0 if (self.encoded or self._no_range) else pos
        try:
            resp = http_client.request("GET", self.url, timeout_ms=self.timeout_ms, tls=self.tls,
                                       range_start=start if start else None)
        except http_client.HttpError as e:
            raise Retry(e.reason)
        try:
            first = self._accept(resp, start)
        except BaseException:
            resp.close()
            raise
        self.wire = first
        return first

    def _accept(self, resp, start):
        st = resp.status
        if st >= 500 or st in (408, 429):
            raise Retry("HTTP %d %s" % (st, short(resp.reason, 40)))
        if st == 416 and start:
            known = self.size if self.size is not None else self.total
            if start == known and not self.encoded:
                resp.close()  # everything had arrived; only the end of the body was lost
                self._resp = _Empty()
                return start
            _log.warning("server refused the Range request; starting over")
            self._no_range = True
            raise Retry("HTTP 416")
        if st not in (200, 206):
            raise UpdateError(E_DOWNLOAD, "HTTP %d %s" % (st, short(resp.reason, 40)))
        h = resp.headers
        self.encoded = "gzip" in h.get("content-encoding", "").lower()
        if st == 206:
            if self.encoded:
                raise Retry("gzip response to a Range request")
            cr = content_range(h.get("content-range", ""))
            if not start or cr is None or cr[0] != start:
                raise UpdateError(E_DOWNLOAD, "bad Content-Range in 206 response")
            total, first = cr[1], start
        else:
            total, first = resp.length, 0
            if start and not self.encoded:
                _log.warning("server ignored the Range request; skipping %d bytes", start)
        if not self.encoded:
            if self.size is not None and total is not None and total != self.size:
                raise UpdateError(E_INTEGRITY, "server file is %d bytes, offer says %d"
                                  % (total, self.size))
            self.total = total
        self._resp = resp
        return first

    def readinto(self, buf):
        n = self._resp.readinto(buf)
        if n and self.taps:
            self._tap(buf, n)
        self.wire += n
        return n

    def _tap(self, buf, n):
        w = self.wire
        end = w + n
        if end > self.tapped:
            data = buf if n == len(buf) else memoryview(buf)[:n]
            if w < self.tapped:  # a body fetched again from its start
                data = memoryview(data)[self.tapped - w:]
            for t in self.taps:
                t.update(data)
            self.tapped = end

    def finish(self):
        pass

    def close(self):
        if self._resp is not None:
            self._resp.close()
            self._resp = None
