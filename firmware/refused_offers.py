# Offers whose image was refused (settings "ota_refused"): a corrupt or mis-versioned image would
# otherwise be downloaded, erased and written again at every check, forever. The last refused
# offer is remembered -- as a short digest of its url path (a pre-signed query changes from
# check to check), version, size and md5/sha256 -- with the time and the wait before it is
# tried again: 1 h, doubled at each refusal of the same offer (up to 1 day). A changed offer (a
# new url, version, size or digest) or `force` tries at once.
#
# Only refusals of the image itself count (-2 integrity, -4 version or package): a download
# that broke (-1) or a flash fault (-3) says nothing about the offer. One small record, written
# only when an image is refused (flash wear).
import binascii
import hashlib

from firmware import log

_log = log.get("ota")

KEY = "ota_refused"       # {"id", "version", "code", "why", "at" (board.time_ms()), "wait_ms"}
FIRST_WAIT_MS = 3600000
MAX_WAIT_MS = 24 * 3600000
COUNTED = (-2, -4)        # E_INTEGRITY, E_VERSION (firmware/update/errors.py)


def offer_id(url, version, size=None, md5=None, sha256=None):
    path = url.split("?")[0] if isinstance(url, str) else ""
    text = "%s|%s|%s|%s|%s" % (path, version or "", size or "", (md5 or "").lower(),
                               (sha256 or "").lower())
    return binascii.hexlify(hashlib.sha256(text.encode()).digest()[:8]).decode()


def _record(settings, oid):
    r = settings.get(KEY)
    return r if isinstance(r, dict) and r.get("id") == oid else None


def blocked(board, oid, force=False):
    """(why, code) when this offer is not tried now -- why: a line for the log and the screen,
    code: the refusal's -2 or -4 -- or None."""
    if force:
        return None
    r = _record(board.settings, oid)
    if r is None:
        return None
    try:
        now = board.time_ms()
        left = r["at"] + r["wait_ms"] - now
    except (KeyError, TypeError):
        return None
    if left <= 0 or now < r["at"]:  # waited long enough, or the clock went back: try again
        return None
    why = "firmware %s was refused (%s); next try in %d min" % (
        r.get("version") or "?", r.get("why") or "?", (left + 59999) // 60000)
    return why, r.get("code") if r.get("code") in COUNTED else COUNTED[0]


def refused(board, oid, version, code, reason):
    """An install of this offer failed with `code`; remember it when the image was at fault.
    Returns the wait before the next try (ms), or None when not remembered."""
    if code not in COUNTED:
        return None
    old = _record(board.settings, oid)
    wait = FIRST_WAIT_MS
    if old is not None and isinstance(old.get("wait_ms"), int):
        wait = min(old["wait_ms"] * 2, MAX_WAIT_MS)
    rec = {"id": oid, "version": version, "code": code, "why": str(reason)[:60],
           "at": board.time_ms(), "wait_ms": wait}
    try:
        board.settings.set(KEY, rec)
    except OSError as e:
        _log.error("could not store %s: %s", KEY, e)
        return None
    _log.warning("firmware %s refused (%s): not tried again for %d min", version, rec["why"],
                 wait // 60000)
    return wait


def forget(board):
    """An install succeeded: no refusal stands."""
    try:
        board.settings.delete(KEY)
    except OSError:
        pass
