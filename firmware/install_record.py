# The record of the last firmware installed from an OTA-check offer (settings "ota_last_install"):
#   {"version", "url", "tries": installs of this offer, "health": the new image reached its
#    health check, "rollback": why it is not running (set once, at the boot that finds out)}
#
# The same (version, url) is not installed twice: it either runs now (a forced re-install would
# loop) or it rolled back (installing it again would loop through the bootloader). But a new
# image whose first boot is cut short -- power lost, a crash before it talks to its server --
# rolls back without having been tried, and refusing it for good would strand the device on the
# old firmware. So the app notes when the new image reaches its health check (its first OTA
# check, or the MQTT report that confirms it); an offer that rolled back before that is installed
# again, up to `rollback_retries` more times (config, default DEFAULT_RETRIES).
from firmware import log, version

_log = log.get("ota")

KEY = "ota_last_install"
DEFAULT_RETRIES = 3


def retries(config):
    v = config.get("rollback_retries")
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else DEFAULT_RETRIES


def _same(last, offered, url):
    return isinstance(last, dict) and last.get("version") == offered and last.get("url") == url


def _tries(last):
    t = last.get("tries")
    return t if isinstance(t, int) and not isinstance(t, bool) and t > 0 else 1


def _put(board, record):
    try:
        board.settings.set(KEY, record)
    except OSError as e:
        _log.error("could not store %s: %s", KEY, e)


def again(settings, offered, url, running, retries=DEFAULT_RETRIES):
    """None: never installed. False: installed before, not again. A note (str): installed before
    but rolled back before its health check -- install it again."""
    last = settings.get(KEY)
    if not _same(last, offered, url):
        return None
    tries = _tries(last)
    unchecked = last.get("health") is False and not version.same(str(offered), running)
    if not unchecked or tries > retries:
        return False
    return "retrying %s (install %d of %d): it rolled back before its health check" % (
        offered, tries + 1, retries + 1)


def note_installed(board, offer):
    """An offer was installed and set to boot (counting the installs of the same offer)."""
    last = board.settings.get(KEY)
    tries = _tries(last) + 1 if _same(last, offer["version"], offer["url"]) else 1
    _put(board, {"version": offer["version"], "url": offer["url"], "tries": tries,
                 "health": False})


def note_health_check(board, running):
    """The running image got to its health check: a rollback from now on is its own fault."""
    last = board.settings.get(KEY)
    if isinstance(last, dict) and last.get("health") is False and \
            version.same(str(last.get("version")), running):
        last = dict(last)
        last["health"] = True
        _put(board, last)


def review_rollback(board, running):
    """At boot: why the last installed image is not the one running, the first time; else None.
    The reason stays in the record, for the platform's -3 report."""
    last = board.settings.get(KEY)
    if not isinstance(last, dict) or "health" not in last or last.get("rollback"):
        return None
    v = str(last.get("version"))
    if version.same(v, running):
        return None
    if last.get("why"):  # confirm_deadline.py said why before the reset
        why = "firmware %s rolled back: %s" % (v, last["why"])
    elif last.get("health"):
        why = "firmware %s rolled back: it failed its health check" % v
    else:
        why = ("firmware %s rolled back before its health check (power loss or a crash during "
               "its first boot)" % v)
    last = dict(last)
    last["rollback"] = why
    _put(board, last)
    return why
