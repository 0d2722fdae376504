# The MQTT session under the iThings layer: one broker connection through umqtt.simple (pinned,
# unmodified). It connects and subscribes, reconnects with exponential backoff plus jitter,
# sends the messages that matter at QoS 1 -- queued while the connection is down, flushed on the
# next one -- pings to keep the connection alive (also during a long download: whoever blocks
# calls service() now and then) and notices a broker that stopped answering.
#
# Received messages wait in an inbox and reach `handler(topic, msg)` from service(), never
# from inside umqtt.simple's read loops: those also run while a QoS 1 publish waits for its
# PUBACK, and publishing from there would nest them (the inner loop swallows the outer PUBACK).
import errno
import os
import time

from firmware import compat  # noqa: F401 -- registers `ussl` for umqtt.simple's TLS
from firmware import lib_first, log, mqtt_transport
from firmware.mqtt_transport import Net, TimeoutSocket

_umqtt = lib_first.load("umqtt.simple")  # lib/'s pinned copy, not the board's frozen one

_log = log.get("mqtt")

IO_TIMEOUT_MS = 10000            # any single socket wait (connect, handshake, packet)
RECONNECT_BASE_MS = 1000
RECONNECT_MAX_MS = 60000
QUEUE_MAX = 8
INBOX_MAX = 16
_MQTT_ERRORS = {1: "unacceptable protocol version", 2: "client id rejected",
                3: "server unavailable", 4: "bad username or password", 5: "not authorised"}

_umqtt.socket = Net(IO_TIMEOUT_MS)  # umqtt.simple's `socket`: connects time out


def rand_below(n):
    """Uniform-ish int in [0, n) from the hardware RNG (no shared seed across a fleet)."""
    if n <= 0:
        return 0
    b = os.urandom(4)
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) % n


def backoff_ms(failures, max_ms, rand=rand_below):
    """Delay before reconnect number `failures` (1, 2, ...): 1 s doubling up to max_ms, then
    jittered to half..full so a fleet that lost its broker does not come back at once."""
    d = RECONNECT_BASE_MS
    for _ in range(failures - 1):
        d *= 2
        if d >= max_ms:
            d = max_ms
            break
    return d // 2 + rand(d // 2 + 1)


def errtext(e):
    if isinstance(e, _umqtt.MQTTException) and e.args:
        return "broker refused: %s (%s)" % (_MQTT_ERRORS.get(e.args[0], "error"), e.args[0])
    if isinstance(e, ValueError):
        return " ".join(str(e).split()) or "TLS error"
    if isinstance(e, OSError) and e.args:
        a = e.args
        if len(a) > 1:
            return str(a[1])
        if a[0] == -1:
            return "connection closed"
        return errno.errorcode.get(a[0], str(a[0]))
    return repr(e)


def _mark_packets(client):
    """Every wait_msg (check_msg's, and subscribe's wait for SUBACK) starts at a packet: the
    socket keeps its first byte, the PUBLISH flags no umqtt.simple version passes on."""
    orig = client.wait_msg

    def wait_msg():
        mark = getattr(client.sock, "expect_packet", None)
        if mark is not None:
            mark()
        return orig()
    client.wait_msg = wait_msg


class Session:
    """cfg: host, port, tls, ssl_context(), client_id, username, password, keepalive,
    reconnect_max_ms; `subscriptions`: topics (QoS 1). on_connect() runs after every
    (re)subscription, before the queue is flushed; handler(topic, msg) gets each message."""

    def __init__(self, cfg, subscriptions, handler=None, on_connect=None):
        self.cfg = cfg
        self.subscriptions = subscriptions
        self.handler = handler
        self.on_connect = on_connect
        self.client = None
        self.sock = None
        self.failures = 0
        self.next_connect = time.ticks_ms()
        self.ping_at = None           # when the unanswered ping went out
        self.tx_at = time.ticks_ms()
        self.queue = []               # [topic, payload, on_sent] waiting for a connection
        self.inbox = []               # (topic, msg, retained) received, handled by service()
        self.retained = False         # the retain flag of the message being handled

    @property
    def connected(self):
        return self.client is not None

    # ---- connection -----------------------------------------------------------------------
    def _connect(self):
        c = self.cfg
        _log.info("connecting to %s:%d as %s%s", c.host, c.port, c.client_id,
                  " (TLS)" if c.tls else "")
        ctx = c.ssl_context() if c.tls else None  # no ssl_params: umqtt 1.4.0 has none
        client = _umqtt.MQTTClient(c.client_id.encode(), c.host, c.port,
                                   user=c.username.encode() if c.username else None,
                                   password=(c.password or "").encode() if c.username else None,
                                   keepalive=c.keepalive, ssl=ctx)
        if ctx is not None:
            mqtt_transport.use_tls(client, ctx)
        client.set_callback(self._on_message)
        _mark_packets(client)
        try:
            mqtt_transport.connect(client, IO_TIMEOUT_MS)
            self.sock = TimeoutSocket(client.sock, IO_TIMEOUT_MS)
            client.sock = self.sock
            self.client = client
            for topic in self.subscriptions:
                client.subscribe(topic.encode(), qos=1)
        except BaseException:
            self.client = None
            try:
                (self.sock or client.sock).close()
            except Exception:
                pass
            self.sock = None
            raise
        self.tx_at = time.ticks_ms()
        self.ping_at = None
        self.failures = 0
        _log.info("connected; subscribed %s", " and ".join(self.subscriptions))
        if self.on_connect is not None:
            self.on_connect()
        self._flush_queue()

    def drop(self, why):
        if self.client is None:
            return
        _log.warning("connection lost: %s", why)
        try:
            self.sock.close()
        except Exception:
            pass
        self.client = None
        self.sock = None
        self._schedule_reconnect()

    def _schedule_reconnect(self):
        self.failures += 1
        d = backoff_ms(self.failures, self.cfg.reconnect_max_ms)
        self.next_connect = time.ticks_add(time.ticks_ms(), d)
        _log.info("reconnect in %d ms", d)

    def _try_connect(self):
        if self.client is not None or time.ticks_diff(self.next_connect, time.ticks_ms()) > 0:
            return
        try:
            self._connect()
        except Exception as e:  # TLS verification failures arrive as ValueError
            _log.warning("connect to %s:%d failed: %s", self.cfg.host, self.cfg.port, errtext(e))
            self._schedule_reconnect()

    def service(self):
        """Read what the broker sent (non-blocking), keep the connection alive, detect death,
        (re)connect when due; then hand the inbox to the handler."""
        if self.client is None:
            self._try_connect()
            self._drain()
            return
        try:
            for _ in range(16):
                before = self.sock.rx_bytes
                self.client.check_msg()
                if self.client is None or self.sock.rx_bytes == before:
                    break
            if self.client is None:
                return
            now = time.ticks_ms()
            half = self.cfg.keepalive * 500
            if self.ping_at is not None:
                if time.ticks_diff(self.sock.rx_at, self.ping_at) >= 0:
                    self.ping_at = None  # something (the PINGRESP) came back
                elif time.ticks_diff(now, self.ping_at) > half:
                    self.drop("no answer to ping")
                    return
            if self.ping_at is None and time.ticks_diff(now, self.tx_at) >= half:
                self.client.ping()
                self.ping_at = self.tx_at = now
        except Exception as e:
            self.drop(errtext(e))
        self._drain()

    def idle(self, ms):
        """Wait up to `ms` for the broker to send something (or until a reconnect is due)."""
        if self.client is None:
            left = time.ticks_diff(self.next_connect, time.ticks_ms())
            if left < ms:
                ms = left if left > 0 else 0
            time.sleep_ms(ms)
            return
        try:
            self.sock.wait_readable(ms)
        except Exception as e:
            self.drop(errtext(e))

    def disconnect(self):
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
            self.client = None

    # ---- sending ----------------------------------------------------------------------------
    def publish(self, topic, payload, qos):
        """Publish now; False (and the connection dropped) when that fails."""
        if self.client is None:
            return False
        try:
            self.client.publish(topic.encode(), payload, qos=qos)
            self.tx_at = time.ticks_ms()
            return True
        except Exception as e:
            self.drop(errtext(e))
            return False

    def send(self, topic, payload, on_sent=None):
        """A message that matters (QoS 1): sent now, or queued until the next connection (the
        oldest goes when QUEUE_MAX wait). on_sent() runs once it was delivered."""
        if self.publish(topic, payload, 1):
            if on_sent:
                on_sent()
            return
        if len(self.queue) >= QUEUE_MAX:
            self.queue.pop(0)
        self.queue.append([topic, payload, on_sent])

    def _flush_queue(self):
        while self.queue and self.client is not None:
            topic, payload, on_sent = self.queue[0]
            if not self.publish(topic, payload, 1):
                return
            self.queue.pop(0)
            if on_sent:
                on_sent()

    # ---- receiving --------------------------------------------------------------------------
    def _on_message(self, topic, msg):
        if len(self.inbox) >= INBOX_MAX:
            _log.warning("inbox full: dropped a message on %s", topic)
            return
        head = getattr(self.sock, "head", None)
        self.inbox.append((topic, msg, head is not None and bool(head & 1)))

    def _drain(self):
        while self.inbox:
            topic, msg, self.retained = self.inbox.pop(0)  # the handler may ask (push_guard)
            try:
                self.handler(topic.decode() if isinstance(topic, bytes) else topic, msg)
            except Exception as e:  # a bad message must never look like a broken connection
                _log.error("message on %s not handled: %r", topic, e)
            self.retained = False
