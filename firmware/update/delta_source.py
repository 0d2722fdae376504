# Source stage: a delta update. The offer's URL is a detools patch (firmware/delta.py) against
# the running image; this stage hands out the image the patch makes, so the checks, the flash
# writer, the read-back and the commit treat it exactly like a downloaded image.
#
# The offer's md5/size describe the patch file: the md5 is a tap on the wire bytes (as for a
# .gz file); its sha256 describes the resulting image and is checked on it.
#
# Before anything is erased, open() reads the patch headers and checks its base: a patch for
# another image is E_VERSION (the platform should send a full image); a patch that is corrupt,
# truncated or makes a too-large image is E_INTEGRITY.
#
# Resume: the applier's state (decoder, base position) cannot be saved, so every open() starts
# the patch at byte 0 (resumable = False; the pipeline skips the image bytes the checks and the
# writer already have -- nothing is programmed twice), and no resume record is kept across a
# reset: the patch is small, and the running image it reads is never written.
from firmware import app_image, delta
from firmware.update.errors import E_INTEGRITY, E_VERSION, UpdateError
from firmware.update.http_source import Wrapper

WRONG_BASE = "patch is for another base image"


class DeltaSource(Wrapper):
    resumable = False

    def __init__(self, inner, base, limit, from_sha256=None, chunk=4096, wire_size=None):
        self.inner = inner            # HttpSource of the patch file
        self.base = base              # the running app partition (read only)
        self.limit = limit            # the target partition's size
        self.expect = from_sha256     # the offer's base digest (hex), or None
        self.chunk = chunk
        self.wire_size = wire_size    # the patch file's length, as the offer says
        self._running = None          # the running image's SHA-256, computed once
        self._d = None

    def length(self):
        return None if self._d is None else self._d.size

    def open(self, pos):
        self.inner.open(0)
        try:
            self._d = self._start()
        except BaseException:
            self.inner.close()  # the pipeline closes only a source that opened
            raise
        return 0

    def _start(self):
        try:
            d = delta.Applier(self.inner, self.base, self.limit, chunk=self.chunk)
            if self._running is None:
                self._running = delta.running_sha256(self.base)
            d.check_base(self._running, self.expect)
        except delta.WrongBase as e:
            raise UpdateError(E_VERSION, WRONG_BASE if str(e) == WRONG_BASE
                              else "%s: %s" % (WRONG_BASE, e))
        except app_image.ImageError as e:
            raise UpdateError(E_VERSION, "%s: running image: %s" % (WRONG_BASE, e))
        except delta.DeltaError as e:
            raise UpdateError(E_INTEGRITY, "bad patch: %s" % e)
        return d

    def readinto(self, buf):
        try:
            return self._d.readinto(buf)
        except delta.DeltaError as e:
            raise UpdateError(E_INTEGRITY, "bad patch: %s" % e)

    def finish(self):
        self.inner.finish()
        if not self._d.done:
            raise UpdateError(E_INTEGRITY, "bad patch: it ends before the image is complete")
        if self.wire_size is not None and self.inner.wire != self.wire_size:
            raise UpdateError(E_INTEGRITY, "download is %d bytes, offer says %d"
                              % (self.inner.wire, self.wire_size))

    def close(self):
        self.inner.close()
