# What the user sees: the one seam between the app and a screen.
#
# open(board, config) returns firmware.display's Display (LCD + console renderers) when that
# package is present, else a console stand-in with the same methods. Either way it is wrapped so a failing screen can
# never take the device down with it.
from firmware import log

_log = log.get("screen")

METHODS = ("show_booting", "show_activation", "show_checking", "show_updating", "show_success",
           "show_failure", "show_idle", "screenshot")


class ConsoleDisplay:
    """The screen as log lines (boards without an LCD, and the app's fallback)."""

    def show_booting(self, wifi, server):
        _log.info("booting: Wi-Fi %s, server %s", wifi or "-", server or "-")

    def show_activation(self, code, message):
        _log.info("ACTIVATION CODE %s  (%s)", code, (message or "").replace("\n", " | "))

    def show_checking(self):
        _log.info("checking for updates")

    def show_updating(self, percent, rate_kib_s, from_v, to_v):
        _log.info("updating %s -> %s: %d%% (%.1f KiB/s)", from_v, to_v, percent, rate_kib_s or 0)

    def show_success(self, text):
        _log.info("%s", text)

    def show_failure(self, reason, next_action):
        _log.info("problem: %s -- %s", reason, next_action)

    def show_idle(self, version):
        _log.info("idle, running %s", version)

    def screenshot(self, name):
        return None


class _Guarded:
    """Forwards to the real display; logs (once per method) instead of raising."""

    def __init__(self, inner):
        self._inner = inner
        self._broken = set()

    def _call(self, name, args):
        try:
            return getattr(self._inner, name)(*args)
        except Exception as e:  # the screen is never worth a crash
            if name not in self._broken:
                self._broken.add(name)
                _log.warning("display %s failed: %r", name, e)
            return None

    def show_booting(self, *a):
        return self._call("show_booting", a)

    def show_activation(self, *a):
        return self._call("show_activation", a)

    def show_checking(self, *a):
        return self._call("show_checking", a)

    def show_updating(self, *a):
        return self._call("show_updating", a)

    def show_success(self, *a):
        return self._call("show_success", a)

    def show_failure(self, *a):
        return self._call("show_failure", a)

    def show_idle(self, *a):
        return self._call("show_idle", a)

    def screenshot(self, *a):
        return self._call("screenshot", a)


def _real(board, config):
    """firmware.display's Display (LCD when the board has one, plus the console), or None.

    config.json "display" (optional): {"autoshot": false, "shot_dir": "screenshots"}.
    """
    try:
        from firmware import display as display_pkg
    except ImportError:
        return None
    create = getattr(display_pkg, "create", None)
    if create is None:
        return None
    cfg = config.get("display") or {}
    try:
        return create(lcd=board.display(), console=True,
                      shot_dir=cfg.get("shot_dir") or "screenshots", autoshot=bool(cfg.get("autoshot")))
    except Exception as e:
        _log.warning("no display (%r); status goes to the console", e)
        return None


def open(board, config):
    inner = _real(board, config)
    return _Guarded(inner if inner is not None else ConsoleDisplay())
