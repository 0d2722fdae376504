# The hardware watchdog and its feed hook. A hang that no socket timeout covers (a read with no
# timeout, a busy loop, a deadlocked driver) resets the chip, and the bootloader then rolls back
# an image that was never confirmed.
#
# The app starts it once at boot (start(board, config) -> board.watchdog(timeout_ms)) and feeds
# it from one place in its state loop. Long operations keep it fed through this module:
#   feed()          call between the steps of anything that may legitimately take long (the
#                   download chunk loop, MQTT waits); a no-op until start() ran
#   sleep_ms(ms)    a sleep that feeds in slices (retry backoff, activation polls, idle timers)
# A feed proves progress, so never feed from inside a blocking wait: the watchdog is there for
# the waits that never end.
#
# Config: watchdog_s (DEFAULT_S; 0 turns it off). It must exceed the longest single blocking call
# between two feeds: the OTA check (http_deadline_s) and any socket wait (http_timeout_ms); a
# value that does not is raised, with a warning, to twice the longer of the two. Keep it well
# above the updater's own 15 s read timeout too. On the ESP32-S3 the watchdog cannot be stopped
# once started (ports/esp32/machine_wdt.c has no deinit): main() returning (run_until, tests and
# tools only) leaves it running.
import time

from firmware import log

_log = log.get("watchdog")

DEFAULT_S = 120
SLICE_MS = 1000     # sleep_ms() feeds at least this often

_wdt = None         # the board's watchdog object, once started
_timeout_ms = 0
_also = []          # run by every feed(): deadlines that hold in any state (confirm_deadline)


def timeout_ms(config):
    """The configured timeout in ms (0: off), raised above the longest blocking call."""
    v = config.get("watchdog_s", DEFAULT_S)
    if v is None:
        v = DEFAULT_S
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
        _log.warning("watchdog_s %r is not a number of seconds; using %d", v, DEFAULT_S)
        v = DEFAULT_S
    ms = int(v * 1000)
    if ms == 0:
        return 0
    floor = _longest_blocking_ms(config)
    if ms <= floor:
        _log.warning("watchdog_s %s is not above the longest blocking call (%d ms); using %d ms",
                     v, floor, 2 * floor)
        ms = 2 * floor
    return ms


def _longest_blocking_ms(config):
    longest = 0
    for key, scale in (("http_timeout_ms", 1), ("http_deadline_s", 1000)):
        v = config.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v * scale > longest:
            longest = int(v * scale)
    return longest


def start(board, config):
    """Start the board's watchdog (idempotent); the object, or None when off or unavailable."""
    global _wdt, _timeout_ms
    ms = timeout_ms(config)
    if ms == 0:
        _log.warning("watchdog off (watchdog_s 0): a hang needs a power cycle")
        return None
    make = getattr(board, "watchdog", None)
    if make is None:
        _log.warning("this board has no watchdog")
        return None
    try:
        _wdt = make(ms)
    except (OSError, ValueError) as e:
        _log.error("cannot start the watchdog: %r", e)
        return None
    _timeout_ms = ms
    _log.info("watchdog on: reset when not fed for %d s", ms // 1000)
    return _wdt


def feed():
    """Tell the watchdog the device is making progress."""
    w = _wdt
    if w is not None:
        w.feed()
    for f in _also:
        f()


def also(f):
    """Run f() on every feed() from now on (cheap: feeds come after every download read)."""
    if f not in _also:
        _also.append(f)


def sleep_ms(ms):
    """Sleep `ms` milliseconds, feeding the watchdog at least every SLICE_MS."""
    ms = int(ms)
    while ms > 0:
        feed()
        step = SLICE_MS if ms > SLICE_MS else ms
        time.sleep_ms(step)
        ms -= step
    feed()


def bitten():
    """True when the (simulated) watchdog fired and the main thread must now reset the board."""
    w = _wdt
    return bool(w is not None and getattr(w, "bitten", False))


def stop():
    """Stop the watchdog where the board allows it (the simulator); False on the ESP32-S3."""
    global _wdt
    w = _wdt
    if w is None:
        return True
    halt = getattr(w, "stop", None)
    if halt is None:
        _log.warning("the hardware watchdog cannot be stopped: the chip resets in %d s unless fed",
                     _timeout_ms // 1000)
        return False
    halt()
    _wdt = None
    return True
