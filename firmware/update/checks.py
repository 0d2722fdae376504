# Check stages: plain objects fed the image stream in order, each byte once per pass, with
# update(buf); finish(end) raises UpdateError when what went by was wrong (end: bytes fed).
# They never touch flash or the network. The pipeline feeds a whole chunk (>= 1024 bytes)
# before it erases anything, so HeaderCheck refuses a bad image before flash is touched.
import binascii
import hashlib

from firmware import anti_rollback, app_image, version as _version
from firmware.update.errors import E_INTEGRITY, E_VERSION, UpdateError, short


def check_newer(offered, running):
    """Raise E_VERSION unless `offered` is newer than `running`."""
    try:
        newer = _version.is_newer(offered, running)
    except ValueError:
        raise UpdateError(E_VERSION, "cannot compare versions %s and %s"
                          % (short(offered, 32), short(running, 32)))
    if not newer:
        raise UpdateError(E_VERSION, "version %s is not newer than running %s"
                          % (short(offered, 32), short(running, 32)))


class HeaderCheck:
    """Image header, chip id and esp_app_desc_t on the first bytes; then the version rule: the
    image is the version the offer names, or (when it names none) newer than the running one.
    floor: (running secure_version, efuse SECURE_VERSION): a lower secure_version is refused,
    force or not (anti_rollback.py)."""

    def __init__(self, offer_version, running_version, force=False, floor=(0, 0)):
        self.offer_version = offer_version
        self.running_version = running_version
        self.force = force
        self.floor = floor
        self.desc = None

    def update(self, buf):
        if self.desc is not None:
            return
        try:
            desc = app_image.check_header(buf)
        except app_image.ImageError as e:
            raise UpdateError(E_INTEGRITY, "bad image: %s" % e)
        try:
            anti_rollback.check(desc.secure_version, self.floor[0], self.floor[1])
        except anti_rollback.RollbackError as e:
            raise UpdateError(E_VERSION, e.reason)
        want = self.offer_version
        if want is not None:
            if not _version.same(desc.version, str(want)):
                raise UpdateError(E_VERSION, "image is version %s, offer says %s"
                                  % (short(desc.version, 32), short(want, 32)))
        elif not self.force:
            check_newer(desc.version, self.running_version)
        self.desc = desc

    def finish(self, end):
        if end == 0 or self.desc is None:
            raise UpdateError(E_INTEGRITY, "empty or too short download")


class Digest:
    """md5 or sha256 of the stream; finish() compares it with `expected` (hex) when given. The
    hash object's own update is the check's update: no Python call per chunk."""

    def __init__(self, name, expected=None):
        self.name = name
        self.expected = expected
        self._h = getattr(hashlib, name)()
        self.update = self._h.update
        self._digest = None

    def digest(self):
        if self._digest is None:
            self._digest = self._h.digest()
        return self._digest

    def finish(self, end):
        if self.expected and binascii.hexlify(self.digest()).decode() != self.expected:
            raise UpdateError(E_INTEGRITY, "%s mismatch" % self.name)
