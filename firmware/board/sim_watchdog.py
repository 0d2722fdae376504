# machine.WDT for the simulated board: the ESP32-S3 task watchdog as MicroPython's esp32 port
# exposes it (ports/esp32/machine_wdt.c, mp_machine_wdt_make_new_instance):
# - the id must be 0 (lines 43-45); a timeout <= 0 is ValueError("WDT timeout too short") (47-49);
# - there is one watchdog: another WDT() call reconfigures the timeout of the same object
#   (esp_task_wdt_reconfigure, line 56; the user is added only once, line 61) and returns it;
# - it cannot be stopped (extmod/machine_wdt.c: the type has feed() and nothing else here);
# - not fed in time, the task watchdog panics (.trigger_panic = true, line 54) and the chip
#   resets; the bootloader then runs, and rolls back an image still pending verification.
#
# The sim board resets by ending its process with REBOOT_EXIT_CODE; the runner powers it on
# again. A hang blocks the main thread inside C (a socket read without timeout) where no Python
# runs, so a thread watches the feed time. When it fires it sends the process SIGINT: the unix
# port's handler is installed without SA_RESTART (ports/unix/unix_mphal.c, sighandler and
# mp_hal_set_interrupt_char) and its syscalls handle pending exceptions on EINTR
# (ports/unix/mphalport.h, MP_HAL_RETRY_SYSCALL), so the main thread gets KeyboardInterrupt
# wherever it is; app.main() sees `bitten` and resets the board through board.reboot(). If the
# process is still there a few seconds later, it is killed. Without _thread the check runs at
# every feed(), which catches a slow loop but not a hang.
import os
import time

from firmware import log

_log = log.get("sim")
POLL_MS = 100           # how often the watcher thread looks at the feed time
GRACE_MS = 3000         # after the interrupt, how long the main thread has to reset the board

_the = None             # the one watchdog of the simulated chip


def _pid():
    with open("/proc/self/stat") as f:
        return int(f.read().split()[0])


def _signal(sig, pid):
    # In the background: system() ignores SIGINT in the caller while its shell runs (POSIX),
    # so the signal must arrive after system() has returned.
    os.system("(sleep 0.2; kill -%s %d) >/dev/null 2>&1 &" % (sig, pid))


class Watchdog:
    def __init__(self, timeout_ms, reset):
        self.timeout_ms = timeout_ms
        self.bitten = False
        self._reset = reset             # used when there is no thread: reset from feed()
        self._fed = [time.ticks_ms()]   # a list item: one pointer store, safe across threads
        self._running = [True]
        self._pid = _pid()
        try:
            import _thread
        except ImportError:
            self._thread = False
        else:
            self._thread = True
            _thread.start_new_thread(self._watch, ())

    def feed(self):
        if not self._thread and self._overdue():
            self._bite()
            self._reset()
        self._fed[0] = time.ticks_ms()

    def stop(self):
        """Sim only (run_until): the real watchdog has no way to stop."""
        self._running[0] = False

    def _overdue(self):
        return time.ticks_diff(time.ticks_ms(), self._fed[0]) > self.timeout_ms

    def _bite(self):
        self.bitten = True
        _log.error("watchdog: not fed for %d ms; resetting the board",
                   time.ticks_diff(time.ticks_ms(), self._fed[0]))

    def _watch(self):
        while self._running[0]:
            time.sleep_ms(POLL_MS)
            if self._running[0] and self._overdue():
                break
        if not self._running[0]:
            return
        self._bite()
        _signal("INT", self._pid)
        time.sleep_ms(GRACE_MS)
        _log.error("watchdog: the main thread did not reset the board; killing the process")
        _signal("KILL", self._pid)


def make(timeout_ms, reset):
    """The chip's watchdog: created on the first call, reconfigured by later ones."""
    global _the
    if not isinstance(timeout_ms, int) or timeout_ms <= 0:
        raise ValueError("WDT timeout too short")
    if _the is None or not _the._running[0]:
        _the = Watchdog(timeout_ms, reset)
    else:  # esp_task_wdt_reconfigure restarts the timer (esp_system/task_wdt/task_wdt.c)
        _the.timeout_ms = timeout_ms
        _the.feed()
    return _the
