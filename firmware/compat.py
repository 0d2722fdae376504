# Compatibility shims so pinned third-party MicroPython libraries run unmodified.
#
# umqtt.simple 1.3.4 does `import ussl` and calls `ussl.wrap_socket(sock, **ssl_params)` for
# TLS. MicroPython >= 1.23 has no `ussl` (only `ssl`), so install() registers this module as
# `ussl`. wrap_socket builds an SSLContext(PROTOCOL_TLS_CLIENT) and verifies the server against
# the CA when one is given (PEM text or DER bytes).
import sys

from firmware import pem

try:
    import ssl as _ssl
except ImportError:  # a build without TLS: plain MQTT still works
    _ssl = None

CERT_NONE = getattr(_ssl, "CERT_NONE", 0)
CERT_OPTIONAL = getattr(_ssl, "CERT_OPTIONAL", 1)
CERT_REQUIRED = getattr(_ssl, "CERT_REQUIRED", 2)


def wrap_socket(sock, server_hostname=None, cadata=None, cert_reqs=None, key=None, cert=None,
                context=None, **kw):
    """ussl.wrap_socket: a TLS client socket. With `context` (an ssl.SSLContext, see
    mqtt_transport.use_tls) that context wraps it; with `cadata` the server certificate must
    chain to it (and match server_hostname); without either, `cert_reqs` decides (default: no
    verification, the old ussl behaviour -- callers that care pass a CA)."""
    if context is not None:
        return context.wrap_socket(sock, server_hostname=server_hostname)
    if _ssl is None:
        raise OSError("TLS not available in this build")
    ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
    if cadata:
        ctx.verify_mode = CERT_REQUIRED
        for der in pem.ders(cadata):
            ctx.load_verify_locations(cadata=der)
    else:
        ctx.verify_mode = CERT_NONE if cert_reqs is None else cert_reqs
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx.wrap_socket(sock, server_hostname=server_hostname)


def install():
    """Make `import ussl` work (idempotent); leaves a real `ussl` alone."""
    if "ussl" in sys.modules:
        return
    try:
        import ussl  # noqa: F401 -- an older port that still has it
        return
    except ImportError:
        pass
    sys.modules["ussl"] = sys.modules[__name__]


install()
