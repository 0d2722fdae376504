# The update engine: stream an app image from a URL into the next OTA partition, verify it twice
# (the bytes received, then what actually landed on flash) and only then switch the boot
# partition. It never reboots; the caller does, and the new image confirms itself after its
# health check (until then the bootloader rolls it back on the next reset).
#
# Flash: firmware/flash_writer.py. Each whole 64 KiB block of the image is staged and written
# with one writeblocks(n, buf64k) -- the port's only way to a 64 KiB block erase -- and the tail
# is erased by 4 KiB sectors; every region is erased once, every byte programmed once.
#
# Memory: one chunk buffer (plus gzip's window and ring when inflating) reused for the download,
# the resume re-hash and the read-back, plus the writer's 64 KiB stage; the steady-state chunk
# loop allocates nothing.
#
# Resume: a dropped connection continues with a Range request at the write position (all of it
# programmed and hashed). Progress is persisted in board.settings["ota_resume"] at 64 KiB
# boundaries, at most once a second (a settings write wears flash and costs time), so
# after a reset the same offer continues from there, re-hashing what is on flash (MicroPython
# hash objects cannot be saved) rather than trusting it; if the result then fails its digest
# check the engine starts over once from byte 0. A server answering 200 to a Range request has
# the already-written part of its body skipped.
#
# gzip: a URL ending in ".gz" or a "Content-Encoding: gzip" response is inflated on the fly. The
# offer's md5/sha256/size describe the file the server stores: for a ".gz" URL that is the
# compressed file (the md5 a platform computes over the upload); for on-the-fly
# Content-Encoding it is the image itself. A gzip download cannot continue mid-stream (the
# inflater state is lost), so it restarts from byte 0 but skips re-writing what is on flash.
#
# After a failure that gets as far as the flash, the first sector of the target is erased. A
# partial image could not boot anyway (set_boot and the bootloader verify the image's SHA-256),
# but a complete image that failed *our* checks (md5, sha256, version) would verify, and the
# bootloader falls back to any verifying slot if the running one ever breaks: it must not.
import hashlib
import time
import binascii

from firmware import app_image, flash_writer, http_client, log, version as _version

SECTOR = 4096
BLOCK = 65536
RESUME_KEY = "ota_resume"
# Resume progress is saved when a 64 KiB block is on flash, at most once every PERSIST_MS:
PERSIST_MS = 1000      # settings writes wear flash and take time
RETRIES = 5            # consecutive failed attempts (no progress) before giving up
BACKOFF_MS = 500       # first retry delay, doubled per failure up to BACKOFF_MAX_MS
BACKOFF_MAX_MS = 8000
PROGRESS_MS = 250      # progress callbacks at most this often (plus one at the end)

E_DOWNLOAD = -1   # download / init
E_INTEGRITY = -2  # md5, sha256, size, header
E_FLASH = -3      # flash write, read-back or boot switch
E_VERSION = -4    # version or package type

_log = log.get("updater")


class UpdateError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code
        self.reason = reason

    def __str__(self):
        return "%s (%d)" % (self.reason, self.code)


class Offer:
    """What to install. size/md5/sha256 describe the file the server stores (see above)."""

    def __init__(self, url, size=None, md5=None, sha256=None, version=None, force=False):
        self.url = url
        self.size = size
        self.md5 = md5
        self.sha256 = sha256
        self.version = version
        self.force = force


class _Empty:
    """The rest of a body that had already arrived in full."""

    def readinto(self, buf):
        return 0

    def close(self):
        pass


class _Retry(Exception):
    """An attempt failed in a way a new request may fix (dropped connection, 5xx, timeout)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def _hex_digest(h):
    return binascii.hexlify(h.digest()).decode()


def _hexarg(value, n, what):
    if value is None or value == "":
        return None
    s = str(value).strip().lower()
    if len(s) != n:
        raise UpdateError(E_DOWNLOAD, "bad %s in offer" % what)
    try:
        binascii.unhexlify(s)
    except ValueError:
        raise UpdateError(E_DOWNLOAD, "bad %s in offer" % what)
    return s


def _short(text, n=60):
    text = str(text)
    return text if len(text) <= n else text[:n] + "..."


def _url_path(url):
    i = url.find("?")
    j = url.find("#")
    if j >= 0 and (i < 0 or j < i):
        i = j
    return url if i < 0 else url[:i]


def _content_range(value):
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


class _Job:
    def __init__(self, board, offer, progress, tls, timeout_ms, chunk, retries, probe):
        if chunk < 1024 or chunk > BLOCK or chunk & (chunk - 1):
            raise UpdateError(E_DOWNLOAD, "chunk must be a power of two in 1024..65536")
        self.board = board
        self.offer = offer
        self.url = offer.url
        if not isinstance(self.url, str) or not self.url:
            raise UpdateError(E_DOWNLOAD, "offer has no URL")
        self.md5 = _hexarg(offer.md5, 32, "md5")
        self.sha256 = _hexarg(offer.sha256, 64, "sha256")
        try:
            self.size = None if offer.size in (None, "") else int(offer.size)
        except (TypeError, ValueError):
            raise UpdateError(E_DOWNLOAD, "bad size in offer")
        if self.size is not None and self.size <= 0:
            raise UpdateError(E_INTEGRITY, "bad size in offer")
        self.progress = progress
        self.tls = tls
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.probe = probe
        self.gz_url = _url_path(self.url).lower().endswith(".gz")
        self.gz = self.gz_url  # learnt from Content-Encoding too
        self.gz_error = None
        P = board.Partition
        try:
            self.part = P(P.RUNNING).get_next_update()
            info = self.part.info()
            self.label = info[4]
            self.psize = info[3]
        except (OSError, ValueError) as e:
            raise UpdateError(E_FLASH, "no OTA partition to write: %s" % e)
        self.writer = flash_writer.BlockWriter(self.part)
        self._buf = bytearray(chunk)
        self._mv = memoryview(self._buf)
        self.pos = 0         # image bytes programmed (and hashed), from the partition start
        self.desc = None     # AppDesc once the header was checked
        self.need = None     # image bytes expected, when known
        self.resumed = False  # continued from a record persisted before a reset
        self.t0 = time.ticks_ms()
        self.d0 = 0
        self.t_prog = self.t0
        self.t_persist = self.t0
        self._new_hashes()

    # ---- hashes ----------------------------------------------------------------------------
    def _new_hashes(self):
        """Fresh hash objects. Image side: md5 for the read-back, plus the offer's digests when
        they describe the image; wire side: the offer's digests for a ".gz" file."""
        self.h_img = hashlib.md5()
        self.h_img_sha = None
        self.h_wire = None
        self.h_wire_sha = None
        if self.gz_url:
            if self.md5:
                self.h_wire = hashlib.md5()
            if self.sha256:
                self.h_wire_sha = hashlib.sha256()
        elif self.sha256:
            self.h_img_sha = hashlib.sha256()
        self.hashed = 0  # image bytes covered by the image-side hashes

    # ---- checks ----------------------------------------------------------------------------
    def precheck(self, running_version):
        o = self.offer
        if o.version is not None and not o.force:
            self._check_newer(o.version, running_version)
        if self.size is not None and not self.gz_url and self.size > self.psize:
            raise UpdateError(E_INTEGRITY, "image (%d bytes) larger than partition %s (%d bytes)"
                              % (self.size, self.label, self.psize))
        self.running_version = running_version

    def _check_newer(self, offered, running):
        try:
            newer = _version.is_newer(offered, running)
        except ValueError:
            raise UpdateError(E_VERSION, "cannot compare versions %s and %s"
                              % (_short(offered, 32), _short(running, 32)))
        if not newer:
            raise UpdateError(E_VERSION, "version %s is not newer than running %s"
                              % (_short(offered, 32), _short(running, 32)))

    def _check_header(self, data):
        try:
            desc = app_image.check_header(data)
        except app_image.ImageError as e:
            raise UpdateError(E_INTEGRITY, "bad image: %s" % e)
        o = self.offer
        if o.version is not None:
            if not _version.same(desc.version, str(o.version)):
                raise UpdateError(E_VERSION, "image is version %s, offer says %s"
                                  % (_short(desc.version, 32), _short(o.version, 32)))
        elif not o.force:
            self._check_newer(desc.version, self.running_version)
        self.desc = desc

    # ---- resume records --------------------------------------------------------------------
    def _record_matches(self, r):
        o = self.offer
        if not isinstance(r, dict) or r.get("label") != self.label:
            return False
        if r.get("size") != self.size or r.get("version") != o.version or r.get("md5") != self.md5:
            return False
        if not self.md5 and r.get("url") != self.url:  # a pre-signed URL changes per push; md5 not
            return False
        w = r.get("written")
        return isinstance(w, int) and 0 < w <= self.psize and w % BLOCK == 0

    def load_resume(self):
        settings = self.board.settings
        r = settings.get(RESUME_KEY)
        if r is None:
            return
        if not self._record_matches(r):
            settings.delete(RESUME_KEY)
            return
        self.pos = r["written"]  # a block boundary: the writer erases what lies beyond again
        self.resumed = True
        _log.info("resuming the download at %d bytes (written before a reset)", self.pos)

    def _persist(self):
        self.t_persist = time.ticks_ms()
        w = self.pos - self.pos % SECTOR
        try:
            self.board.settings.set(RESUME_KEY, {"url": self.url, "version": self.offer.version,
                                                 "md5": self.md5, "size": self.size,
                                                 "written": w, "label": self.label})
        except Exception as e:  # a full NVS costs the resume ability, not the update
            _log.warning("cannot persist download progress: %r", e)

    def _forget(self):
        try:
            self.board.settings.delete(RESUME_KEY)
        except Exception as e:
            _log.warning("cannot clear download progress: %r", e)

    # ---- flash -----------------------------------------------------------------------------
    def _read_flash(self, off, data):
        try:
            self.part.readblocks(off // SECTOR, data, off % SECTOR)
        except OSError as e:
            raise UpdateError(E_FLASH, "flash read failed at 0x%x: %s" % (off, e))

    def _rehash_flash(self):
        """Hash what an earlier run left on flash (0..pos) and check its header again."""
        self._new_hashes()
        buf = self._buf
        chunk = len(buf)
        off = 0
        while off < self.pos:
            self._read_flash(off, buf)  # pos is a multiple of the chunk size
            if off == 0:
                self._check_header(buf)
            self.h_img.update(buf)
            if self.h_img_sha is not None:
                self.h_img_sha.update(buf)
            off += chunk
        self.hashed = self.pos

    # ---- one download attempt --------------------------------------------------------------
    def _open(self):
        """Request the rest of the file; return (source, image offset of its first byte)."""
        start = 0 if self.gz else max(self.pos, self.writer.staged_end())
        try:
            resp = http_client.request("GET", self.url, timeout_ms=self.timeout_ms, tls=self.tls,
                                       range_start=start if start else None)
        except http_client.HttpError as e:
            raise _Retry(e.reason)
        try:
            return self._accept(resp, start)
        except BaseException:
            resp.close()
            raise

    def _accept(self, resp, start):
        st = resp.status
        h = resp.headers
        if st >= 500 or st in (408, 429):
            raise _Retry("HTTP %d %s" % (st, _short(resp.reason, 40)))
        if st == 416 and start and start == self.need and not self.gz:
            resp.close()
            return _Empty(), start  # everything had arrived; only the end of the body was lost
        if st == 416 and start:
            _log.warning("server refused the Range request; starting over")
            self._restart()
            raise _Retry("HTTP 416")
        if st not in (200, 206):
            raise UpdateError(E_DOWNLOAD, "HTTP %d %s" % (st, _short(resp.reason, 40)))
        encoded = "gzip" in h.get("content-encoding", "").lower()
        if encoded and not self.gz:
            self.gz = True
            if start:  # ranges of an encoded body mean nothing to the inflater: start over
                raise _Retry("gzip response to a Range request")
        length = resp.length
        if st == 206:
            cr = _content_range(h.get("content-range", ""))
            if not start or cr is None or cr[0] != start:
                raise UpdateError(E_DOWNLOAD, "bad Content-Range in 206 response")
            total = cr[1]
            first = start
        else:
            total = length
            first = 0
        served = self.size if (self.gz_url or not self.gz) else None
        if served is not None and total is not None and total != served:
            raise UpdateError(E_INTEGRITY, "server file is %d bytes, offer says %d" % (total, served))
        if self.gz:
            self.need = self.size if not self.gz_url else None  # image size, when known
        else:
            self.need = self.size if self.size is not None else total
            if self.need is not None and self.need > self.psize:
                raise UpdateError(E_INTEGRITY, "image (%d bytes) larger than partition %s (%d bytes)"
                                  % (self.need, self.label, self.psize))
        if self.gz:
            self._new_hashes()  # the stream starts again at 0: so do the hashes
            hashes = [x for x in (self.h_wire, self.h_wire_sha) if x is not None]
            from firmware import gunzip  # only when needed (RAM)
            self.gz_error = gunzip.GzipError
            return gunzip.Gunzip(resp, len(self._buf), len(self._buf), hashes), 0
        return resp, first

    def _restart(self):
        self.pos = 0
        self.writer.reset()
        self._new_hashes()

    def _pump(self, src, off):
        """Copy the stream (starting at image offset `off`) to flash; return the end offset."""
        buf = self._buf
        mv = self._mv
        chunk = len(buf)
        h = self.h_img
        hs = self.h_img_sha
        probe = self.probe
        progress = self.progress
        limit = self.need if self.need is not None else self.psize
        writer = self.writer
        wire_total = self.size if self.gz_url else None
        while True:
            n = src.readinto(buf)
            if n != chunk:  # short read (end of body, chunk boundary): fill up or finish
                while 0 < n < chunk:
                    m = src.readinto(mv[n:])
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
            data = buf if n == chunk else mv[:n]
            if off >= self.hashed:
                if off == 0 and self.desc is None:
                    self._check_header(data)  # before the first erase
                h.update(data)
                if hs is not None:
                    hs.update(data)
                self.hashed = end
            if off >= self.pos:
                try:
                    block_done = writer.write(off, data)  # programs whole 64 KiB blocks
                except OSError as e:
                    raise UpdateError(E_FLASH, "flash write failed at 0x%x: %s" % (off, e))
                if block_done:
                    self.pos = end
                    if time.ticks_diff(time.ticks_ms(), self.t_persist) >= PERSIST_MS:
                        self._persist()
            off = end
            if progress is not None:
                now = time.ticks_ms()
                if time.ticks_diff(now, self.t_prog) >= PROGRESS_MS:
                    self.t_prog = now
                    self._report(src.wire if wire_total else off, wire_total or self.need)
            if probe is not None:
                probe(off)

    def _report(self, done, total):
        ms = time.ticks_diff(time.ticks_ms(), self.t0)
        rate = (done - self.d0) * 1000 // ms if ms > 0 and done > self.d0 else 0
        try:
            self.progress(done, total, rate)
        except Exception as e:  # a broken display must not break the update
            _log.warning("progress callback failed: %r", e)

    def _attempt(self):
        src, off = self._open()
        try:
            if off < self.pos and not self.gz:
                _log.warning("server ignored the Range request; skipping %d bytes", self.pos - off)
            end = self._pump(src, off)
            if self.gz:
                src.drain(self.size if self.size is not None and self.gz_url else self.psize)
        finally:
            src.close()
        return end, src

    # ---- the whole update ------------------------------------------------------------------
    def run(self):
        if self.pos and not self.gz:
            self._rehash_flash()
        fails = 0
        attempts = 0
        delay = BACKOFF_MS
        self.d0 = self.pos
        while True:
            before = self.pos
            attempts += 1
            try:
                end, src = self._attempt()
                break
            except _Retry as e:
                reason = e.reason
            except http_client.HttpError as e:  # the connection broke mid-body
                reason = e.reason
            except UpdateError:
                raise
            except Exception as e:
                if self.gz_error is not None and isinstance(e, self.gz_error):
                    raise UpdateError(E_INTEGRITY, str(e))
                raise
            fails = 0 if self.pos > before else fails + 1
            if fails > self.retries or attempts > 4 * (self.retries + 1):
                raise UpdateError(E_DOWNLOAD, "download failed: %s" % _short(reason))
            _log.warning("download interrupted at %d bytes (%s); retrying in %d ms",
                         self.pos, reason, delay)
            time.sleep_ms(delay)
            delay = min(delay * 2, BACKOFF_MAX_MS)
        self._finish(end, src)
        return self.label

    def _finish(self, end, src):
        need = self.need
        if end == 0 or self.desc is None:
            raise UpdateError(E_INTEGRITY, "empty or too short download")
        if need is not None and end < need:
            raise UpdateError(E_INTEGRITY, "truncated: got %d of %d bytes" % (end, need))
        if self.gz_url and self.size is not None and src.wire != self.size:
            raise UpdateError(E_INTEGRITY, "download is %d bytes, offer says %d" % (src.wire, self.size))
        img_md5 = self.h_img.digest()
        md5 = self.h_wire if self.gz_url else None
        got = _hex_digest(md5) if md5 is not None else binascii.hexlify(img_md5).decode()
        if self.md5 and got != self.md5:
            raise UpdateError(E_INTEGRITY, "md5 mismatch")
        sha = self.h_wire_sha if self.gz_url else self.h_img_sha
        if self.sha256 and _hex_digest(sha) != self.sha256:
            raise UpdateError(E_INTEGRITY, "sha256 mismatch")
        try:
            self.writer.finish()  # the image's tail (less than a block) is still staged
        except OSError as e:
            raise UpdateError(E_FLASH, "flash write failed at 0x%x: %s" % (self.writer.base, e))
        self.pos = end
        # What landed on flash, read back through the same buffer.
        buf = self._buf
        mv = self._mv
        chunk = len(buf)
        h = hashlib.md5()
        off = 0
        while off < end:
            n = min(chunk, end - off)
            data = buf if n == chunk else mv[:n]
            self._read_flash(off, data)
            h.update(data)
            off += n
        if h.digest() != img_md5:
            raise UpdateError(E_FLASH, "flash read-back does not match the download")
        try:
            length = app_image.image_length(self.part)
        except app_image.ImageError as e:
            raise UpdateError(E_INTEGRITY, "bad image: %s" % e)
        if length > end:
            raise UpdateError(E_INTEGRITY, "image needs %d bytes, got %d" % (length, end))
        try:
            self.part.set_boot()
        except OSError as e:
            try:
                ok = app_image.verify_digest(self.part)
            except (app_image.ImageError, OSError):
                ok = False
            if not ok:
                raise UpdateError(E_INTEGRITY, "image digest does not verify")
            raise UpdateError(E_FLASH, "boot switch failed: %s" % e)

    def scrub(self):
        """After a final failure: make sure nothing in the target can ever be booted."""
        if self.writer.touched or self.pos:
            try:
                r = self.part.ioctl(6, 0)
            except OSError as e:
                r = e
            if r != 0:
                _log.warning("could not erase the failed image's first sector: %s", r)


def install(board, offer, running_version, progress=None, tls=None, timeout_ms=15000, chunk=4096,
            retries=RETRIES, probe=None):
    """Download `offer` into the next OTA partition and set it to boot; return its label.

    progress(done, total, rate_bytes_s) is called at most every PROGRESS_MS (total may be None).
    probe(offset), for benchmarks, is called after every chunk. Raises UpdateError (.code, .reason);
    the boot partition is untouched then. Never reboots."""
    job = _Job(board, offer, progress, tls, timeout_ms, chunk, retries, probe)
    job.precheck(running_version)
    job.load_resume()
    _log.info("update %s -> %s into %s", running_version, offer.version or "?", job.label)
    try:
        try:
            job.run()
        except UpdateError as e:
            # A resumed download trusted flash written before a reset; if the result does not
            # verify, do it once more from scratch before giving up.
            if not job.resumed or e.code == E_DOWNLOAD:
                raise
            _log.warning("resumed image failed (%s); downloading again from the start", e.reason)
            job.resumed = False
            job._restart()
            job.desc = None
            job.run()
    except UpdateError as e:
        job.scrub()
        job._forget()
        _log.error("update failed: %s", e)
        raise
    except Exception as e:
        job.scrub()
        job._forget()
        _log.error("update failed: %r", e)
        raise UpdateError(E_DOWNLOAD, "internal error: %s" % _short(repr(e)))
    job._forget()
    if progress is not None:
        job._report(job.pos, job.pos)
    _log.info("image %s written to %s and set to boot", job.desc.version, job.label)
    return job.label
