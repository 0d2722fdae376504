# The offer being installed, kept across a reset (settings "ota_offer"), so that an update cut
# by a power loss or a crash continues by itself instead of waiting for a new push:
#   {"source": "push" | "check", "token": the push's msgToken (None for a check offer),
#    "version", "url", "md5", "size", "starts": downloads begun for this offer,
#    "delta": true for a patch (isDiff 2), "sha256": the push's file digest -- only when set}
# The bytes already on flash are the updater's business (update/resume.py continues from its
# record); this module only decides whether the offer may be taken up again:
#   - a pre-signed URL (X-Amz-Date + X-Amz-Expires in its query) that has expired cannot be
#     fetched any more: the push is reported -1 "interrupted; offer expired" instead;
#   - an OTA-check offer has no expiry: the check right after the boot offers it again and the
#     updater continues it (App.install counts its starts here);
#   - at most MAX_RESUMES resumed starts per offer, so a reset loop cannot erase the flash for
#     ever (a download that resets the board every time is given up).
# A clock that was never set (before 2020) cannot judge an expiry: the server then decides.
from firmware import log

_log = log.get("ota")

KEY = "ota_offer"
MAX_RESUMES = 3
_CLOCK_SET_MS = 1577836800000   # 2020-01-01: a wall clock below this was never set


def _same(r, source, token, version, url, md5, size):
    # a pre-signed URL changes per check or push; the file's md5 does not (as update/resume.py)
    return isinstance(r, dict) and r.get("source") == source and r.get("token") == token and \
        r.get("version") == version and r.get("md5") == md5 and r.get("size") == size and \
        (md5 or r.get("url") == url)


def begin(settings, source, version, url, md5=None, size=None, token=None, delta=False,
          sha256=None):
    """A download of this offer starts. Returns None, or why it must not (too many starts).
    Counted before the first byte, so a reset during the download still counts. `delta` and
    `sha256` are kept so a resumed offer is checked and applied as the first start was."""
    r = settings.get(KEY)
    starts = r.get("starts", 0) if _same(r, source, token, version, url, md5, size) else 0
    if not isinstance(starts, int) or starts < 0:
        starts = 0
    if starts > MAX_RESUMES:
        return "interrupted by a reset %d times; gave up" % starts
    r = {"source": source, "token": token, "version": version, "url": url, "md5": md5,
         "size": size, "starts": starts + 1}
    if delta:
        r["delta"] = True
    if sha256:
        r["sha256"] = sha256
    try:
        settings.set(KEY, r)
    except OSError as e:  # costs the resume ability, not the update
        _log.warning("cannot save the offer: %s", e)
    return None


def forget(settings):
    try:
        settings.delete(KEY)
    except OSError as e:
        _log.warning("cannot forget the saved offer: %s", e)


def pending(settings, source, token=None):
    """The saved offer of `source` (and that push token), or None."""
    r = settings.get(KEY)
    if not isinstance(r, dict) or r.get("source") != source or not r.get("url"):
        return None
    if token is not None and r.get("token") != token:
        return None
    return r


def why_not(r, now_ms):
    """None when the saved offer `r` can be resumed now, else the reason it cannot."""
    s = r.get("starts")
    if isinstance(s, int) and s > MAX_RESUMES:
        return "interrupted by a reset %d times; gave up" % s
    end = expiry_ms(r["url"])
    if end is not None and now_ms >= _CLOCK_SET_MS and now_ms >= end:
        return "interrupted; offer expired"
    return None


def _query(url):
    q = {}
    i = url.find("?")
    if i < 0:
        return q
    for part in url[i + 1:].split("#")[0].split("&"):
        kv = part.split("=", 1)
        q[kv[0].lower()] = kv[1] if len(kv) > 1 else ""
    return q


def expiry_ms(url):
    """When a pre-signed (AWS SigV4) URL stops working, in UTC ms; None when it does not say."""
    q = _query(url)
    d = q.get("x-amz-date")
    e = q.get("x-amz-expires")
    if not d or not e:
        return None
    try:
        secs = int(e)
        # YYYYMMDDTHHMMSSZ
        y, mo, day = int(d[0:4]), int(d[4:6]), int(d[6:8])
        h, mi, s = int(d[9:11]), int(d[11:13]), int(d[13:15])
    except ValueError:
        return None
    if len(d) != 16 or d[8] != "T" or d[15] != "Z" or not 1 <= mo <= 12 or secs < 0:
        return None
    return ((_days(y, mo, day) * 24 + h) * 60 + mi) * 60000 + s * 1000 + secs * 1000


def _days(y, m, d):
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
