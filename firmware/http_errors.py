# The errors of the device's HTTP client (http_client, http_response), and how an OSError from
# a socket or TLS read becomes one of them.
import errno

# Socket timeouts: ETIMEDOUT is 110 on Linux and 116 on the esp32 port (newlib errno,
# MICROPY_USE_INTERNAL_ERRNO 0 in ports/esp32/mpconfigport.h:71; modsocket.c:668 reports a
# timed-out read as MP_ETIMEDOUT); EAGAIN 11. Through TLS the same errno arrives negated:
# extmod/modtls_mbedtls.c _mbedtls_ssl_recv returns -err and socket_read (line 786) hands
# mbedtls' code on unchanged, so a TLS read timeout is OSError(-116) on the board, -110 here.
_TIMEOUT_ERRNOS = (errno.ETIMEDOUT, errno.EAGAIN, 110, 116, 11,
                   -errno.ETIMEDOUT, -110, -116)


class HttpError(Exception):
    permanent = False  # True: the same request can never succeed; do not retry it

    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Timeout(HttpError):
    pass


class SlowBody(Timeout):
    """The body fell below the request's minimum rate or past its deadline (http_pace.Slow)."""


class Permanent(HttpError):
    """A URL or redirect this client will never follow (bad URL, credentials in it, an
    unsupported scheme, too many redirects, https -> http): retrying cannot help."""
    permanent = True


def errtext(e):
    """An OSError as text: the mbedtls name and code, or the errno name."""
    a = e.args
    if len(a) > 1:  # mbedtls errors: (code, "MBEDTLS_ERR_...")
        return "%s (%s)" % (a[1], a[0])
    n = a[0] if a else 0
    name = errno.errorcode.get(n) if isinstance(n, int) else None
    return name or str(n)


def is_timeout(e):
    """Whether an OSError is a socket (or TLS) read/connect timeout."""
    return bool(e.args) and e.args[0] in _TIMEOUT_ERRNOS


def io_error(e, what):
    """The HttpError (a Timeout for a timeout) for an OSError during `what`."""
    if is_timeout(e):
        return Timeout(what + " timed out")
    return HttpError(what + " failed: " + errtext(e))
