# Anti-rollback: an image's esp_app_desc_t.secure_version (a u32, app_image.AppDesc) must not be
# lower than the running image's, nor than efuse SECURE_VERSION on a real board. ESP-IDF's rule is
# the same comparison: esp_efuse_check_secure_version() accepts secure_version >= the efuse value
# (components/efuse/src/esp_efuse_fields.c). `force` in an offer never overrides it: refusing a
# lower secure_version is the field's whole point.
from firmware import app_image


class RollbackError(Exception):
    """An image whose secure_version is below the floor (.reason says which floor)."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def check(image_version, running_version=0, efuse_version=0):
    """Raise RollbackError when `image_version` is lower than the running image's secure_version
    or the efuse one (None counts as 0: an image without a descriptor, a board without efuse)."""
    image_version = image_version or 0
    running_version = running_version or 0
    efuse_version = efuse_version or 0
    if image_version < efuse_version:
        raise RollbackError("secure_version %d is below efuse SECURE_VERSION %d"
                            % (image_version, efuse_version))
    if image_version < running_version:
        raise RollbackError("secure_version %d is below the running image's %d"
                            % (image_version, running_version))


def floor(board):
    """(the running image's secure_version, efuse SECURE_VERSION) of `board`. A running image
    without a readable descriptor counts 0; the efuse floor still holds."""
    try:
        desc = board.app_desc()
    except (OSError, ValueError, app_image.ImageError):
        desc = None
    return (desc.secure_version if desc is not None else 0), board.efuse_secure_version()
