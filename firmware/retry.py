# Exponential backoff with random jitter, bounded in delay and in tries.
#
# Delay before retry n (n = 1, 2, ...): base_s * factor**(n-1), capped at max_s, then spread by
# +/- `jitter` (a fraction: 0.25 spreads 10 s over 7.5..12.5 s) so a fleet that lost its server
# at the same moment does not come back in lock-step. After `tries` failed attempts the caller
# gets Exhausted and decides what "giving up for now" means; nothing here ever re-raises an
# attempt's error, so a failing server can never turn into a crash loop. An error with a true
# `permanent` attribute (a bad URL, an unusable redirect) gives up at once: retrying cannot help.
#
# Config (config.json "retry", every key optional): {"base_s": 10, "factor": 2, "max_s": 1800,
# "tries": 10, "jitter": 0.25} -- the reference firmware's 10 s doubling, 10 tries.
import os

from firmware import log, watchdog

_log = log.get("retry")

DEFAULTS = {"base_s": 10, "factor": 2, "max_s": 1800, "tries": 10, "jitter": 0.25}


class Exhausted(Exception):
    def __init__(self, what, tries, reason):
        super().__init__("%s failed %d times: %s" % (what, tries, reason))
        self.what = what
        self.tries = tries
        self.reason = reason


def _uniform():
    """A float in [0, 1] from the hardware RNG (no seeding to get wrong on the device)."""
    b = os.urandom(2)
    return ((b[0] << 8) | b[1]) / 65535


class Backoff:
    def __init__(self, base_s=10, factor=2, max_s=1800, tries=10, jitter=0.25, rand=_uniform):
        self.base_s = base_s
        self.factor = factor
        self.max_s = max_s
        self.tries = tries
        self.jitter = jitter
        self._rand = rand
        self.failures = 0

    @classmethod
    def from_config(cls, config, key="retry"):
        cfg = dict(DEFAULTS)
        given = config.get(key) if config else None
        if isinstance(given, dict):
            for k in cfg:
                if isinstance(given.get(k), (int, float)) and not isinstance(given.get(k), bool):
                    cfg[k] = given[k]
        return cls(**cfg)

    def reset(self):
        self.failures = 0

    def exhausted(self):
        return self.failures >= self.tries

    def delay_s(self, n):
        """The jittered delay before retry number n (1-based)."""
        d = self.base_s
        for _ in range(n - 1):
            d *= self.factor
            if d >= self.max_s:
                break
        if d > self.max_s:
            d = self.max_s
        if self.jitter:
            d *= 1 + self.jitter * (2 * self._rand() - 1)
        return d if d > 0 else 0

    def fail(self):
        """Count a failure; the delay before the next try, or None when the tries are used up."""
        self.failures += 1
        if self.failures >= self.tries:
            return None
        return self.delay_s(self.failures)


def jittered(seconds, jitter=0.25, rand=_uniform):
    """seconds spread by +/- jitter (periodic timers: keeps a fleet from synchronising)."""
    return seconds * (1 + jitter * (2 * rand() - 1))


def sleep_s(seconds):
    """Sleep, keeping the watchdog fed (a backoff is waiting, not hanging)."""
    watchdog.sleep_ms(int(seconds * 1000))


def call(fn, what, backoff, errors, display=None, sleep=sleep_s, on_error=None):
    """fn() until it returns, retrying on `errors` (an exception class or tuple) with backoff.

    Each failure is logged and shown with its reason and when the next try comes. Raises
    Exhausted after backoff.tries failures. Other exceptions propagate (they are bugs).
    """
    backoff.reset()
    while True:
        try:
            return fn()
        except errors as e:
            reason = getattr(e, "reason", None) or str(e) or e.__class__.__name__
            if on_error:
                on_error(e)
            delay = backoff.fail()
            if getattr(e, "permanent", False):  # e.g. a bad URL: the same try fails again
                _log.error("%s failed: %s; a permanent error, not retried", what, reason)
                if display:
                    display.show_failure(reason, "not retried: fix the configuration")
                raise Exhausted(what, backoff.failures, reason)
            if delay is None:
                _log.error("%s failed (%d/%d): %s; giving up for now", what, backoff.failures,
                           backoff.tries, reason)
                if display:
                    display.show_failure(reason, "gave up after %d tries" % backoff.failures)
                raise Exhausted(what, backoff.failures, reason)
            _log.warning("%s failed (%d/%d): %s; retry in %s s", what, backoff.failures,
                         backoff.tries, reason, _fmt_s(delay))
            if display:
                display.show_failure(reason, "retry %d/%d in %s s" % (backoff.failures + 1,
                                                                      backoff.tries, _fmt_s(delay)))
            sleep(delay)


def _fmt_s(s):
    if s >= 10:
        return "%d" % int(s + 0.5)
    return "%.2f" % s if s < 1 else "%.1f" % s
