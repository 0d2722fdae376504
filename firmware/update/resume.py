# Resume across resets: how far the download got, in board.settings["ota_resume"], saved at
# 64 KiB boundaries at most once every `every_ms` (a settings write wears flash and takes time).
# After a reset the same offer continues from there; a record for anything else is dropped.
import time

from firmware import log

KEY = "ota_resume"
EVERY = 65536

_log = log.get("updater")


class Resume:
    def __init__(self, settings, url, version, md5, size, label, psize, every_ms):
        self.settings = settings
        self.record = {"url": url, "version": version, "md5": md5, "size": size,
                       "written": 0, "label": label}
        self.psize = psize
        self.every_ms = every_ms
        self.saved_at = time.ticks_ms()

    def _matches(self, r, chunk):
        me = self.record
        if not isinstance(r, dict) or r.get("label") != me["label"]:
            return False
        for k in ("size", "version", "md5"):
            if r.get(k) != me[k]:
                return False
        if not me["md5"] and r.get("url") != me["url"]:  # a pre-signed URL changes per push; md5 not
            return False
        w = r.get("written")
        return isinstance(w, int) and 0 < w <= self.psize and w % 4096 == 0 and w % chunk == 0

    def load(self, chunk):
        """Bytes written before a reset for this offer (0: none); a stale record is deleted."""
        r = self.settings.get(KEY)
        if r is None:
            return 0
        if not self._matches(r, chunk):
            self.settings.delete(KEY)
            return 0
        _log.info("resuming the download at %d bytes (written before a reset)", r["written"])
        return r["written"]

    def due(self, end):
        return end % EVERY == 0 and time.ticks_diff(time.ticks_ms(), self.saved_at) >= self.every_ms

    def save(self, pos):
        self.saved_at = time.ticks_ms()
        r = dict(self.record)  # a new dict: a settings store may keep the one it was given
        r["written"] = pos - pos % 4096
        try:
            self.settings.set(KEY, r)
        except Exception as e:  # a full NVS costs the resume ability, not the update
            _log.warning("cannot persist download progress: %r", e)

    def forget(self):
        try:
            self.settings.delete(KEY)
        except Exception as e:
            _log.warning("cannot clear download progress: %r", e)
