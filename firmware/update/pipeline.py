# The chunk loop that joins the stages -- source -> checks -> flash writer -- and the attempts
# around it: a dropped connection is retried with backoff and continued where the checks left
# off, progress is reported at most every PROGRESS_MS, resume records are saved as it goes.
#
# One buffer, reused for the download, the re-hash after a reset and the read-back; the
# steady-state loop allocates nothing. `fed` is how far every check (and the writer) has seen
# the stream; a source that restarts earlier (a gzip body, a server ignoring Range) has the
# bytes below `fed` skipped, so each check sees each byte exactly once per pass.
import time

from firmware import http_client, log
from firmware.update.errors import E_DOWNLOAD, E_INTEGRITY, Retry, UpdateError, short
from firmware.update.pace import SLOW_RETRIES, Ticker

PROGRESS_MS = 250  # progress callbacks at most this often (plus one at the end)

_log = log.get("updater")


class Pipeline:
    def __init__(self, source, header, checks, writer, buf, target, md5, taps=(),
                 image_size=None, resume=None, progress=None, probe=None, tick=None):
        self.source = source
        self.header = header                   # HeaderCheck: fed first and finished first
        self.feeds = (header,) + tuple(checks)  # fed the image stream
        self.finals = tuple(taps) + tuple(checks)  # finished, in order, once the stream ended
        self.md5 = md5                         # the Digest of the stream the read-back matches
        self.writer = writer
        self.buf = buf
        self.label, self.psize = target
        self.image_size = image_size           # image bytes the offer announces, when it does
        self.resume = resume
        self.progress = progress
        self.probe = probe
        self.tick = tick or Ticker()           # after every read: watchdog, MQTT (pace.py)
        self.fed = 0
        self.need = None                       # image bytes expected, when known
        self.t0 = self.t_prog = time.ticks_ms()
        self.d0 = 0

    # ---- the whole download ----------------------------------------------------------------
    def run(self, retries, backoff_ms, backoff_max_ms):
        """Download, check and write the stream; verify it; return its length."""
        if self.writer.pos and self.source.resumable:
            self._rehash(self.writer.pos)
        self.d0 = self.fed
        fails = attempts = slow = 0
        delay = backoff_ms
        while True:
            before = self.fed
            attempts += 1
            try:
                end = self._attempt()
                break
            except Retry as e:
                reason = e.reason
            except http_client.HttpError as e:  # the connection broke mid-body
                if e.permanent:
                    raise UpdateError(E_DOWNLOAD, "download failed: %s" % short(e.reason))
                reason = e.reason
                if isinstance(e, http_client.SlowBody):  # moving, but below the floor
                    slow += 1
                    if slow > SLOW_RETRIES:
                        raise UpdateError(E_DOWNLOAD, "download too slow: %s" % short(reason))
            fails = 0 if self.fed > before else fails + 1
            if fails > retries or attempts > 4 * (retries + 1):
                raise UpdateError(E_DOWNLOAD, "download failed: %s" % short(reason))
            _log.warning("download interrupted at %d bytes (%s); retrying in %d ms",
                         self.fed, reason, delay)
            self.tick.sleep_ms(delay)
            delay = min(delay * 2, backoff_max_ms)
        self._finish(end)
        return end

    def _rehash(self, upto):
        """After a reset: what an earlier run left on flash (0..upto) goes through the checks
        again -- hash objects cannot be saved, and flash is not trusted -- instead of the wire."""
        buf = self.buf
        off = 0
        while off < upto:  # upto is a multiple of the chunk size
            self.writer.read(off, buf)
            for c in self.feeds:
                c.update(buf)
            off += len(buf)
        self.fed = upto

    def _attempt(self):
        src = self.source
        start = src.open(self.fed)
        try:
            need = self.image_size if self.image_size is not None else src.length()
            if need is not None and need > self.psize:
                raise UpdateError(E_INTEGRITY, "image (%d bytes) larger than partition %s (%d bytes)"
                                  % (need, self.label, self.psize))
            self.need = need
            return self._pump(start)
        finally:
            src.close()

    def _pump(self, off):
        """Stream from image offset `off` through the checks to flash; return the end offset."""
        src = self.source
        buf = self.buf
        mv = memoryview(buf)
        chunk = len(buf)
        feeds = self.feeds
        writer = self.writer
        resume = self.resume
        probe = self.probe
        tick = self.tick
        progress = self.progress
        wire_total = src.wire_total
        limit = self.need if self.need is not None else self.psize
        while True:
            n = src.readinto(buf)
            tick()
            if n != chunk:  # short read (end of body, chunk boundary): fill up or finish
                while 0 < n < chunk:
                    m = src.readinto(mv[n:])
                    tick()  # a slow body: MQTT and the watchdog whatever the chunk fill
                    if not m:
                        break
                    n += m
                if not n:
                    return off
            end = off + n
            if end > limit:
                if self.need is not None:
                    raise UpdateError(E_INTEGRITY, "body longer than the %d bytes announced" % limit)
                raise UpdateError(E_INTEGRITY, "image larger than partition %s (%d bytes)"
                                  % (self.label, self.psize))
            fed = self.fed
            if end > fed:
                if off >= fed:
                    at = off
                    data = buf if n == chunk else mv[:n]
                else:  # a restarted source: only what the checks have not seen
                    at = fed
                    data = mv[fed - off:n]
                for c in feeds:  # the header check before anything is erased
                    c.update(data)
                writer.write(at, data)
                self.fed = end
                if resume is not None and writer.pos == end and resume.due(end):
                    resume.save(end)
            off = end
            if progress is not None:
                now = time.ticks_ms()
                if time.ticks_diff(now, self.t_prog) >= PROGRESS_MS:
                    self.t_prog = now
                    self.report(src.wire if wire_total else off, wire_total or self.need)
            if probe is not None:
                probe(off)

    def _finish(self, end):
        self.header.finish(end)
        if self.need is not None and end < self.need:
            raise UpdateError(E_INTEGRITY, "truncated: got %d of %d bytes" % (end, self.need))
        self.source.finish()
        for c in self.finals:
            c.finish(end)
        self.writer.flush()
        self.writer.verify(end, self.buf, self.md5.digest())

    def report(self, done, total):
        ms = time.ticks_diff(time.ticks_ms(), self.t0)
        rate = (done - self.d0) * 1000 // ms if ms > 0 and done > self.d0 else 0
        try:
            self.progress(done, total, rate)
        except Exception as e:  # a broken display must not break the update
            _log.warning("progress callback failed: %r", e)
