# Commit stage: the image that landed is whole, then the boot partition switches to it.
# set_boot (esp_ota_set_boot_partition) verifies the image itself; when it refuses, a digest
# that does not verify is the image's fault (-2), anything else the flash's (-3).
from firmware import app_image, image_scan
from firmware.update.errors import E_FLASH, E_INTEGRITY, UpdateError


def commit(part, end):
    try:
        length = image_scan.image_length(part)
    except app_image.ImageError as e:
        raise UpdateError(E_INTEGRITY, "bad image: %s" % e)
    if length > end:  # the stream may be longer (a signature sector, padding), never shorter
        raise UpdateError(E_INTEGRITY, "image needs %d bytes, got %d" % (length, end))
    try:
        part.set_boot()
    except OSError as e:
        try:
            ok = image_scan.verify_digest(part)
        except (app_image.ImageError, OSError):
            ok = False
        if not ok:
            raise UpdateError(E_INTEGRITY, "image digest does not verify")
        raise UpdateError(E_FLASH, "boot switch failed: %s" % e)
