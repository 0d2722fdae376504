# Keeping a download alive and honest, between its reads:
#   min_rate(config)  the floor a body must keep (update.min_rate_bps over update.min_rate_window_s,
#                     default 1 KiB/s over 30 s; 0 turns it off): http_pace enforces it per
#                     request, and a request that falls below it is retried SLOW_RETRIES times
#                     before the update fails with -1 "download too slow".
#   Ticker(hook)      called by the pipeline after every socket read, however little it brought:
#                     feeds the watchdog (bytes moved, or a read returned within its timeout) and
#                     runs `hook` (the MQTT session's service()) at most every every_ms. While
#                     bytes flow that is every every_ms whatever the chunk fill; a read that gets
#                     nothing returns within the updater's read timeout (15 s), so keep
#                     mqtt.keepalive / 2 above that (the default 60 s is).
import time

from firmware import watchdog

DEFAULT_MIN_BPS = 1024
DEFAULT_WINDOW_S = 30
SLOW_RETRIES = 1     # a download that falls below the floor gets one more request
HOOK_MS = 250        # the hook at most this often (a keepalive of 1 s is still served)
DEFAULT_RATE = (DEFAULT_MIN_BPS, DEFAULT_WINDOW_S * 1000)


def min_rate(config):
    """(bytes_per_s, window_ms) for http_client.request(min_rate=...), or None when off."""
    u = (config or {}).get("update") or {}
    bps = _number(u, "min_rate_bps", DEFAULT_MIN_BPS)
    win = _number(u, "min_rate_window_s", DEFAULT_WINDOW_S)
    if not bps or not win:
        return None
    return int(bps), int(win * 1000)


def _number(section, key, default):
    # config.number's rule, without importing config (and its defaults) into the update's heap
    v = section.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else default


class Ticker:
    def __init__(self, hook=None, every_ms=HOOK_MS):
        self.hook = hook
        self.every_ms = every_ms
        self.at = time.ticks_ms()

    def __call__(self):
        watchdog.feed()
        h = self.hook
        if h is not None:
            now = time.ticks_ms()
            if time.ticks_diff(now, self.at) >= self.every_ms:
                self.at = now
                h()

    def sleep_ms(self, ms):
        """A retry backoff: the watchdog fed and the hook run while it waits."""
        end = time.ticks_add(time.ticks_ms(), int(ms))
        while True:
            self()
            left = time.ticks_diff(end, time.ticks_ms())
            if left <= 0:
                return
            time.sleep_ms(left if left < 200 else 200)
