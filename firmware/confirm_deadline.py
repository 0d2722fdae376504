# The confirm deadline: a new image still pending verification confirm_timeout_s after its boot
# (config; default DEFAULT_S, 0 off) resets the chip, and the bootloader rolls back to the image
# that worked. Without it, a new image whose server or platform never answers (confirm_by
# "mqtt" and no reportInfoReply, an OTA check that keeps failing) would stay pending for ever.
#
# arm(board, config) at boot; check() is run by every watchdog.feed() -- every long operation
# already feeds -- so the deadline holds in any state. Past the deadline, check() reads the
# otadata state once: a confirmed image disarms, a pending one gets the reason written where the
# next boot looks for it (the push's pending record -> the platform's -3 report, the install
# record -> the boot log) and the board reboots. mqtt.confirm_timeout_s, when set, still wins
# (it came first, for pushes only).
import time

from firmware import log, version, watchdog

_log = log.get("app")

DEFAULT_S = 300
K_PENDING = "mqtt_ota_pending"   # ithings_pending's record of the push being installed
K_INSTALL = "ota_last_install"   # install_record's record of the last OTA-check install

_board = None
_running = None
_due = None
_timeout_s = 0


def timeout_s(config):
    v = (config.get("mqtt") or {}).get("confirm_timeout_s")
    if v is None:
        v = config.get("confirm_timeout_s", DEFAULT_S)
    if v is None:
        return DEFAULT_S
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        _log.warning("confirm_timeout_s %r is not a number of seconds; using %d", v, DEFAULT_S)
        return DEFAULT_S
    return v


def arm(board, config, running):
    """Start the deadline when the running image is pending verification (idempotent)."""
    global _board, _running, _due, _timeout_s
    if _board is not None:
        return
    _board = board
    _running = running
    t = timeout_s(config)
    if t == 0 or board.ota_state() != "pending-verify":
        return
    _timeout_s = t
    _due = time.ticks_add(time.ticks_ms(), int(t * 1000))
    _log.info("new image pending verification: it must be confirmed within %s s", t)
    watchdog.also(check)


def reason():
    return "not confirmed within %s s" % _timeout_s


def check():
    """Reboot (to roll back) when the deadline has passed and the image is still pending."""
    global _due
    due = _due
    if due is None or time.ticks_diff(time.ticks_ms(), due) < 0:
        return
    _due = None
    b = _board
    try:
        if b.ota_state() != "pending-verify":
            return  # confirmed in time (by whichever path)
    except OSError as e:
        _log.error("cannot read the otadata state: %s", e)
    why = reason()
    _log.error("new image %s; rebooting to roll back", why)
    _note(b.settings, K_PENDING, "pending_version", why)
    _note(b.settings, K_INSTALL, "version", why)
    b.reboot()


def _note(settings, key, field, why):
    r = settings.get(key)
    if isinstance(r, dict) and version.same(str(r.get(field)), _running):
        r = dict(r)
        r["why"] = why
        try:
            settings.set(key, r)
        except OSError as e:
            _log.error("could not store %s: %s", key, e)
