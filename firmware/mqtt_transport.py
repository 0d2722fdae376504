# The transport under umqtt.simple: sockets with timeouts. The pinned library sets none, so a
# silent broker or a dead link would block the device forever; these give up after timeout_ms
# and record when bytes last arrived (umqtt.simple's check_msg cannot tell a PINGRESP from no
# data, so the listener uses this to notice a missed ping).
import errno
import select
import socket
import time

from firmware import watchdog

# The umqtt.simple a board imports is the *frozen* one: the esp32 port's sys.path is
# ['', '.frozen', '/lib'] (ports/esp32/main.c appends /lib after the frozen entry) and
# ports/esp32/boards/manifest.py freezes require("umqtt.simple") -- 1.4.0 in MicroPython v1.24,
# 1.6.0 in v1.25-v1.26, 1.7.0 in v1.27-v1.28 -- while the unix port here runs lib/'s pinned
# 1.3.4. use_tls() and connect() work the same with every one of them:
#   1.3.4   connect(clean_session); TLS via ussl.wrap_socket(sock, **client.ssl_params)
#   1.4.0   __init__(..., ssl=None) has no ssl_params; connect(clean_session);
#           TLS via client.ssl.wrap_socket(sock, server_hostname=client.server)
#   1.6/1.7 __init__(..., ssl=None, ssl_params={}); connect(clean_session, timeout=None) calls
#           sock.settimeout(timeout); ssl=True means the legacy ssl.wrap_socket(sock,
#           **ssl_params), which drops cert_reqs/cadata, i.e. no certificate check; any other
#           truthy ssl is used as ssl.wrap_socket(sock, server_hostname=client.server).


def use_tls(client, ctx):
    """Make `client` (any umqtt.simple, constructed with ssl=ctx and no ssl_params) verify the
    broker with the SSLContext `ctx`: 1.4+ call ctx.wrap_socket themselves; for 1.3.4 the
    ssl_params attribute hands ctx to firmware/compat.py's ussl.wrap_socket."""
    client.ssl = ctx
    client.ssl_params = {"context": ctx, "server_hostname": client.server}


def connect(client, timeout_ms):
    """client.connect() that cannot hang: 1.6+ take a timeout (and would otherwise reset the
    socket to blocking with settimeout(None)); 1.3.4 and 1.4.0 have no such argument and keep
    the timeout Net's socket() set."""
    try:
        return client.connect(clean_session=True, timeout=timeout_ms / 1000)
    except TypeError:
        if client.sock is not None:  # raised inside connect, not by the call itself
            raise
    return client.connect(clean_session=True)


class Net:
    """What umqtt.simple calls `socket`: sockets that time out instead of blocking forever while
    connecting (the library sets no timeout of its own)."""

    def __init__(self, timeout_ms):
        self.timeout_s = timeout_ms / 1000

    def socket(self, *args):
        watchdog.feed()  # a (re)connect attempt: the listener's loop is alive while offline
        s = socket.socket(*args)
        s.settimeout(self.timeout_s)
        return s

    def getaddrinfo(self, *args):
        return socket.getaddrinfo(*args)


class TimeoutSocket:
    """The connected broker socket as umqtt.simple sees it: "blocking" reads and writes give up
    after timeout_ms (a silent broker must not hang the device), and the time bytes last came in
    is recorded -- umqtt.simple's check_msg cannot tell a PINGRESP from no data."""

    def __init__(self, sock, timeout_ms):
        self.s = sock
        sock.setblocking(False)
        self.timeout_ms = timeout_ms
        self.nb = False
        self.rx_at = time.ticks_ms()
        self.rx_bytes = 0
        self.head = None             # first byte of the last MQTT packet (its fixed header)
        self._want_head = False
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def expect_packet(self):
        """The next byte read starts a packet: keep it as .head (umqtt.simple reads a PUBLISH's
        flags but does not hand them over: the retain bit is bit 0, MQTT 3.1.1 section 3.3.1.3)."""
        self._want_head = True

    def _got(self, d):
        if self._want_head:
            self._want_head = False
            self.head = d[0]
        self.rx_at = time.ticks_ms()
        self.rx_bytes += len(d)

    def setblocking(self, flag):
        self.nb = not flag

    def _wait(self, events, deadline):
        self.poller.modify(self.s, events)
        left = time.ticks_diff(deadline, time.ticks_ms())
        if left <= 0 or not self.poller.poll(left):
            raise OSError(errno.ETIMEDOUT)

    def wait_readable(self, ms):
        self.poller.modify(self.s, select.POLLIN)
        return bool(self.poller.poll(ms))

    def read(self, n):
        if self.nb:
            watchdog.feed()  # check_msg: the listener's loop, or its download progress callback
            d = self.s.read(n)
            if d:
                self._got(d)
            return d
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        buf = b""
        while len(buf) < n:
            d = self.s.read(n - len(buf))
            if d is None:
                self._wait(select.POLLIN, deadline)
                continue
            if not d:
                break  # EOF: a short read, which umqtt.simple turns into an error
            buf += d
        if buf:
            self._got(buf)
        return buf

    def write(self, buf, n=None):
        if isinstance(buf, str):
            buf = buf.encode()
        mv = memoryview(buf)
        if n is not None:
            mv = mv[:n]
        deadline = time.ticks_add(time.ticks_ms(), self.timeout_ms)
        off = 0
        while off < len(mv):
            try:
                k = self.s.write(mv[off:])
            except OSError as e:
                if e.args[0] not in (errno.EAGAIN, 11):
                    raise
                k = None
            if not k:
                self._wait(select.POLLOUT, deadline)
                continue
            off += k
        return off

    def close(self):
        try:
            self.poller.unregister(self.s)
        except Exception:
            pass
        self.s.close()
