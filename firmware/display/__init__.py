# The device's screen, as the app sees it: one method per state, fanned out to renderers (the
# LCD and/or the console). A renderer that fails is logged, never allowed to stop the device.
import os
import time

from firmware import log
from firmware.display.screens import percent_int

_log = log.get("display")

RATE_REFRESH_MS = 1000   # progress: redraw on every whole percent, the rate alone at most this often


class Display:
    def __init__(self, renderers=(), shot_dir="screenshots", autoshot=False, strict=False):
        self.renderers = list(renderers)
        self.shot_dir = shot_dir
        self.autoshot = autoshot      # save <shot_dir>/<kind>.png whenever the screen kind changes
        self.strict = strict          # tests: let renderer errors propagate
        self.state = None             # (kind, fields) last shown
        self.errors = 0
        self.shots = []               # paths saved by autoshot, in order
        self._progress_at = 0

    def show(self, kind, fields):
        if self.state is not None and self.state[0] == kind and self.state[1] == fields:
            return
        changed = self.state is None or self.state[0] != kind
        self.state = (kind, fields)
        for r in self.renderers:
            try:
                r.show(kind, fields)
            except Exception as e:
                self.errors += 1
                if self.strict:
                    raise
                _log.error("%s failed: %r", type(r).__name__, e)
        if self.autoshot and changed:
            path = self.screenshot(kind)
            if path:
                self.shots.append(path)
                _log.info("screenshot %s", path)

    def show_booting(self, wifi="", server="", version=None):
        self.show("booting", {"wifi": wifi, "server": server, "version": version})

    def show_activation(self, code, message="", url=None):
        self.show("activation", {"code": code, "message": message, "url": url})

    def show_checking(self, server=None, version=None):
        self.show("checking", {"server": server, "version": version})

    def show_updating(self, percent, rate_kib_s=None, from_v="", to_v=""):
        """Cheap to call per chunk: only a new whole percent (or a rate change after
        RATE_REFRESH_MS) reaches the renderers."""
        p = percent_int(percent)
        rate = None if rate_kib_s is None else round(rate_kib_s, 1)
        now = time.ticks_ms()
        st = self.state
        if (st is not None and st[0] == "updating" and st[1]["percent"] == p
                and st[1]["from_v"] == from_v and st[1]["to_v"] == to_v
                and time.ticks_diff(now, self._progress_at) < RATE_REFRESH_MS):
            return
        self._progress_at = now
        self.show("updating", {"percent": p, "rate_kib_s": rate, "from_v": from_v, "to_v": to_v})

    def show_success(self, text="Update complete", detail=None):
        self.show("success", {"text": text, "detail": detail})

    def show_failure(self, reason, next_action=""):
        self.show("failure", {"reason": reason, "next_action": next_action})

    def show_idle(self, version, detail=None):
        self.show("idle", {"version": version, "detail": detail})

    def screenshot(self, name):
        """Save what the panel shows as <shot_dir>/<name>.png (simulator only); path or None."""
        for r in self.renderers:
            shot = getattr(r, "screenshot", None)
            if shot is None:
                continue
            _mkdirs(self.shot_dir)
            path = r.screenshot(self.shot_dir + "/" + name + ".png")
            if path:
                return path
        return None


def _mkdirs(path):
    cur = "/" if path.startswith("/") else ""
    for part in path.split("/"):
        if part:
            cur += part
            try:
                os.mkdir(cur)
            except OSError:
                pass
            cur += "/"


def create(lcd=None, console=True, shot_dir="screenshots", autoshot=False):
    """The usual Display: an LCD renderer when there is an LCD driver, plus the console."""
    renderers = []
    if lcd is not None:
        from firmware.display.lcd_renderer import LcdRenderer
        renderers.append(LcdRenderer(lcd))
    if console:
        from firmware.display.console import ConsoleRenderer
        renderers.append(ConsoleRenderer())
    return Display(renderers, shot_dir, autoshot)
