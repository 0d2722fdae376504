# Paced body reads for http_client: a total deadline for a request and a minimum transfer rate.
#
# Per-read socket timeouts cannot bound a whole body: a blocking readinto waits until the buffer
# is full, and a server dripping one byte a second never lets a read time out (slow-loris). Here
# the socket goes non-blocking, each read takes what has arrived, and when nothing has, poll()
# waits for at most the time left -- to the deadline, to the end of the rate window, or the
# socket timeout. Allocation: poll() returns a small list per wait, nothing per byte read.
#
#   deadline  (end, deadline_ms): the request must be complete by ticks `end` -> Slow
#   min_rate  (bytes_per_s, window_ms): every window of window_ms must bring at least
#             bytes_per_s * window_ms / 1000 bytes -> Slow("download too slow ...")
# The updater's source stage uses min_rate (a long download is fine while it moves); the OTA
# check uses the deadline.
import errno
import select
import time

_AGAIN = (errno.EAGAIN, 11)


class Slow(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


def deadline_reason(deadline_ms):
    return "no complete answer within %d s (request deadline)" % (deadline_ms // 1000)


class Paced:
    """The response socket as http_client.Response reads it: readinto(buf, n) -> bytes read
    (0 at EOF), OSError(ETIMEDOUT) after timeout_ms without a byte, Slow past the limits."""

    def __init__(self, sock, timeout_ms, deadline=None, min_rate=None):
        self._sock = sock
        self._timeout_ms = timeout_ms
        self._deadline = deadline
        self._rate = min_rate
        self._win_start = time.ticks_ms()
        self._win_bytes = 0
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        sock.setblocking(False)

    def _wait_ms(self, now):
        wait = self._timeout_ms
        d = self._deadline
        if d is not None:
            left = time.ticks_diff(d[0], now)
            if left <= 0:
                raise Slow(deadline_reason(d[1]))
            if left < wait:
                wait = left
        r = self._rate
        if r is not None:
            gone = time.ticks_diff(now, self._win_start)
            if gone >= r[1]:
                need = r[0] * r[1] // 1000
                if self._win_bytes < need:
                    raise Slow("download too slow: %d bytes in %d s (minimum %d B/s)"
                               % (self._win_bytes, gone // 1000, r[0]))
                self._win_start = now
                self._win_bytes = 0
                gone = 0
            if r[1] - gone < wait:
                wait = r[1] - gone
        return wait

    def readinto(self, buf, n=None):
        if n is None:
            n = len(buf)
        while True:
            wait = self._wait_ms(time.ticks_ms())
            try:
                got = self._sock.readinto(buf, n)
            except OSError as e:
                if not e.args or e.args[0] not in _AGAIN:
                    raise
                got = None
            if got is not None:
                self._win_bytes += got
                return got
            if not self._poll.poll(wait) and wait == self._timeout_ms:
                raise OSError(errno.ETIMEDOUT)

    def close(self):
        try:
            self._poll.unregister(self._sock)
        except Exception:
            pass
        self._sock.close()
