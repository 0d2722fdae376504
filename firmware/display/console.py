# Console renderer: the same screen changes as log lines, for boards without a screen and CI.
# Repeats are dropped and progress is logged every 10 %, so a download does not flood the log.
from firmware import log
from firmware.display.screens import percent_int

STEP = 10


def _line(kind, f):
    g = f.get
    if kind == "booting":
        return "starting | wifi: %s | server: %s" % (g("wifi") or "-", g("server") or "-")
    if kind == "activation":
        s = "activation code %s" % (g("code") or "?")
        if g("message"):
            s += " | " + g("message")
        if g("url"):
            s += " | " + g("url")
        return s
    if kind == "checking":
        return "checking for updates" + (" | " + g("server") if g("server") else "")
    if kind == "updating":
        rate = g("rate_kib_s")
        return "updating %s -> %s | %d%%%s" % (
            g("from_v") or "?", g("to_v") or "?", percent_int(g("percent")),
            "" if rate is None else " | %.1f KiB/s" % rate)
    if kind == "success":
        return "success | " + (g("text") or "done")
    if kind == "failure":
        return "failure | %s | next: %s" % (g("reason") or "unknown error", g("next_action") or "-")
    if kind == "idle":
        return "idle | running %s%s" % (g("version") or "?", " | " + g("detail") if g("detail") else "")
    return "%s | %r" % (kind, f)


class ConsoleRenderer:
    def __init__(self, out=None):
        self.out = out or log.get("screen").info
        self._prev = None
        self._bucket = None

    def show(self, kind, fields):
        if kind == "updating":
            # A new download, every STEP percent and completion get a line; other ticks do not.
            b = (fields.get("from_v"), fields.get("to_v"), percent_int(fields.get("percent")) // STEP)
            if b == self._bucket:
                return
            self._bucket = b
        else:
            self._bucket = None
        line = _line(kind, fields)
        if line != self._prev:
            self._prev = line
            self.out(line)
