# HTTP/1.1 client for the device: one request per connection ("Connection: close"), redirects,
# socket timeouts, TLS with CA verification, a whole-request deadline and a minimum body rate
# (http_pace). The response (http_response.Response) streams its body into the caller's buffer.
#
# Error reasons never contain a URL: pre-signed download URLs carry secrets in their query.
import errno
import json
import socket
import time

from firmware import http_pace, pem
# HttpError, Timeout, SlowBody, Permanent, Response, parse_url and resolve are also this
# module's interface: callers catch http_client.HttpError and friends.
from firmware.http_errors import HttpError, Permanent, SlowBody, Timeout, errtext, io_error, \
    is_timeout
from firmware.http_response import Response
from firmware.http_url import origin, parse_url, resolve

try:
    from firmware import log as _logmod
    _log = _logmod.get("http")
except ImportError:  # used standalone
    _log = None

REDIRECT_CODES = (301, 302, 303, 307, 308)

_warned_unverified = False


def _connect(host, port, timeout_ms):
    try:
        addrs = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except OSError as e:
        raise HttpError("connect failed: DNS lookup for %s failed (%s)" % (host, errtext(e)))
    if not addrs:
        raise HttpError("connect failed: no address for %s" % host)
    err = None
    for ai in addrs:
        s = socket.socket(ai[0], socket.SOCK_STREAM)
        try:
            s.settimeout(timeout_ms / 1000)
            s.connect(ai[-1])
            return s
        except OSError as e:
            s.close()
            err = e
    if is_timeout(err) or err.args[0] == errno.EINPROGRESS:
        raise Timeout("connect to %s:%d timed out" % (host, port))
    raise HttpError("connect failed: %s:%d %s" % (host, port, errtext(err)))


def _warn_unverified():
    global _warned_unverified
    if not _warned_unverified:
        _warned_unverified = True
        msg = "TLS certificate verification is OFF (config tls.verify=false)"
        if _log:
            _log.warning(msg)
        else:
            print("WARNING http: " + msg)


def _tls_wrap(sock, host, tls):
    import ssl
    verify = True if tls is None else tls.get("verify", True)
    ca = None if tls is None else tls.get("ca")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if not ca:
            raise HttpError("tls: verification on but no CA configured")
        ctx.verify_mode = ssl.CERT_REQUIRED
        try:
            ders = pem.ders(ca)
        except ValueError as e:
            raise HttpError("tls: %s" % e)
        for d in ders:
            try:
                ctx.load_verify_locations(cadata=d)
            except (ValueError, OSError):
                raise HttpError("tls: invalid CA certificate")
    else:
        ctx.verify_mode = ssl.CERT_NONE
        _warn_unverified()
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except OSError as e:
        raise io_error(e, "tls handshake")
    except ValueError as e:  # mbedtls reports verification failures as ValueError("\n<text>\n")
        raise HttpError("tls: certificate verification failed: " + str(e).strip())


def _send(sock, data):
    mv = memoryview(data)
    off = 0
    while off < len(data):
        try:
            n = sock.write(mv[off:])
        except OSError as e:
            raise io_error(e, "send")
        if not n:
            raise Timeout("send timed out")
        off += n


def _check_token(s):
    if "\r" in s or "\n" in s:
        raise HttpError("bad header")
    return s


def _encode_body(body):
    if body is None:
        return None, None
    if isinstance(body, dict) or isinstance(body, list):
        return json.dumps(body).encode(), "application/json"
    if isinstance(body, str):
        return body.encode(), None
    return body, None


def _build_head(method, scheme, host, port, path, headers, data, ctype, range_start):
    hp = "[" + host + "]" if ":" in host else host
    if port != (443 if scheme == "https" else 80):
        hp = "%s:%d" % (hp, port)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + hp]
    seen = set()
    if headers:
        for k in headers:
            lk = k.lower()
            if lk in ("host", "connection", "content-length", "transfer-encoding"):
                continue  # we own the framing
            seen.add(lk)
            lines.append(_check_token(k) + ": " + _check_token(str(headers[k])))
    if "user-agent" not in seen:
        lines.append("User-Agent: micropython-http")
    if ctype and "content-type" not in seen:
        lines.append("Content-Type: " + ctype)
    if data is not None or method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: %d" % (0 if data is None else len(data)))
    if range_start is not None and "range" not in seen:
        lines.append("Range: bytes=%d-" % range_start)
    lines.append("Connection: close")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


def _request_once(method, url, headers, data, ctype, timeout_ms, tls, range_start, deadline,
                  min_rate):
    scheme, host, port, path = parse_url(url)
    head = _build_head(method, scheme, host, port, path, headers, data, ctype, range_start)
    wait_ms = timeout_ms
    if deadline is not None:  # connect and headers get no more than what is left
        left = time.ticks_diff(deadline[0], time.ticks_ms())
        if left <= 0:
            raise Timeout(http_pace.deadline_reason(deadline[1]))
        if left < wait_ms:
            wait_ms = left
    sock = _connect(host, port, wait_ms)
    try:
        if scheme == "https":
            sock = _tls_wrap(sock, host, tls)
        _send(sock, head)
        if data:
            _send(sock, data)
        resp = Response(sock, url, method)
    except BaseException:
        sock.close()
        raise
    resp._read_head(wait_ms)  # closes the socket itself on failure
    if resp._sock is not None and (deadline is not None or min_rate is not None):
        resp._sock = http_pace.Paced(resp._sock, timeout_ms, deadline, min_rate)
    return resp


def request(method, url, headers=None, body=None, timeout_ms=10000, max_redirects=5, tls=None,
            range_start=None, deadline_ms=None, min_rate=None):
    """Send one request (following redirects) and return the Response with its body unread.

    body: bytes/str, or a dict/list sent as JSON. tls: {"verify": bool, "ca": PEM/DER or None};
    None means verify with no CA, which fails for https. The caller must close() the response.
    deadline_ms: the whole request, redirects and body included, must be done in that time.
    min_rate: (bytes_per_s, window_ms), the body must keep that pace (firmware/http_pace.py).
    Both end in Timeout with a reason saying which limit was hit.
    """
    method = method.upper()
    data, ctype = _encode_body(body)
    deadline = None
    if deadline_ms:
        deadline = (time.ticks_add(time.ticks_ms(), int(deadline_ms)), int(deadline_ms))
    hops = 0
    while True:
        resp = _request_once(method, url, headers, data, ctype, timeout_ms, tls, range_start,
                             deadline, min_rate)
        st = resp.status
        loc = resp.headers.get("location")
        if st not in REDIRECT_CODES or not loc:
            return resp
        resp.close()
        if hops >= max_redirects:
            raise Permanent("too many redirects", st)
        hops += 1
        new = resolve(url, loc)
        if url[:6].lower() == "https:" and new[:5].lower() == "http:" and \
                not (tls and tls.get("allow_http_redirect")):
            # it would send the request, and take the answer (MQTT credentials), in clear
            raise Permanent("https -> http redirect refused (tls.allow_http_redirect off)", st)
        if headers and origin(new).lower() != origin(url).lower():
            # credentials are for the origin that was asked, not wherever it points to
            headers = dict((k, v) for k, v in headers.items()
                           if k.lower() not in ("authorization", "cookie"))
        if st == 303 and method != "HEAD":
            method = "GET"
            data = ctype = None
            if headers:
                headers = dict((k, v) for k, v in headers.items() if k.lower() != "content-type")
        url = new
