# The OTA-check firmware section's delta (docs/PROTOCOL.md, "firmware.delta"):
#   "firmware": {"version", "url", "size"?, "md5"?, "sha256"?, ...,
#                "delta": {"from_sha256": <64 hex>, "url": <patch URL>, "md5"?, "size"?}}
# from_sha256 names the image the patch applies to (what esp_partition_get_sha256 gives for the
# running app, image_scan.app_sha256); md5/size describe the patch file; the section's sha256
# (when given) is the new image's, checked on the delta's result as on a full download.
#
# The device prefers the delta when its running image is that base, and falls back to the full
# url when it is not, or when the delta fails for any reason (the updater has left the boot
# partition untouched then, and the running image is never written by a delta).
import binascii

from firmware import app_image, image_scan, log

_log = log.get("ota")

HEX = "0123456789abcdef"


def _is_hex(v, n):
    if not isinstance(v, str) or len(v) != n:
        return False
    for c in v.lower():
        if c not in HEX:
            return False
    return True


def problem(d):
    """Why a firmware.delta value is malformed, or None when it is fine (or absent)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        return "firmware.delta is not an object"
    if not _is_hex(d.get("from_sha256"), 64):
        return "firmware.delta.from_sha256 is not a SHA-256 (64 hex digits)"
    if not isinstance(d.get("url"), str) or not d["url"]:
        return "firmware.delta.url is not a string"
    if d.get("md5") is not None and not _is_hex(d["md5"], 32):
        return "firmware.delta.md5 is not an md5 (32 hex digits)"
    size = d.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size <= 0):
        return "firmware.delta.size is not a positive integer"
    return None


def _running_sha256(board):
    try:
        P = board.Partition
        return image_scan.app_sha256(P(P.RUNNING))
    except (app_image.ImageError, OSError, ValueError) as e:
        _log.warning("running image has no usable SHA-256 (%s); no delta", e)
        return None


def plan(board, offer):
    """The updater.Offer keyword sets to try, in order, for an ota_check offer dict: its delta
    first when the running image is the delta's base, then the full image."""
    full = dict((k, v) for k, v in offer.items() if k != "delta")
    d = offer.get("delta")
    if not d:
        return [full]
    running = _running_sha256(board)
    if running is None or binascii.hexlify(running).decode() != d["from_sha256"].lower():
        _log.info("delta offered for another base image; downloading the full image")
        return [full]
    kw = dict(full, url=d["url"], md5=d.get("md5"), size=d.get("size"), delta=True,
              from_sha256=d["from_sha256"])
    return [kw, full] if full.get("url") else [kw]


def install(updater, board, offer, running_version, **kw):
    """updater.install of the plan's offers until one works; the last failure is raised."""
    tries = plan(board, offer)
    for i, o in enumerate(tries):
        try:
            return updater.install(board, updater.Offer(**o), running_version, **kw)
        except updater.UpdateError as e:
            if i + 1 == len(tries):
                raise
            _log.warning("delta update failed (%s); downloading the full image", e.reason)
