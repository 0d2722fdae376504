"""A small MQTT 3.1.1 client for host tools (CPython, threads): QoS 0/1, keepalive, and
automatic reconnect + resubscribe, so a platform stand-in survives a broker restart.

    c = MqttClient("127.0.0.1", 1883, "platform-1", on_message=lambda topic, payload: ...)
    c.connect(); c.subscribe([("$thing/up/property/P/+", 1)]); c.publish("t", b"{}", qos=1)

on_message runs on the client's reader thread; it must not block for long.
"""
import socket
import ssl as _ssl
import struct
import threading
import time

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14


class MqttError(Exception):
    pass


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return struct.pack("!H", len(b)) + b


def _packet(ptype, flags, body):
    n = len(body)
    head = bytearray([ptype << 4 | flags])
    while True:
        byte = n & 0x7F
        n >>= 7
        head.append(byte | (0x80 if n else 0))
        if not n:
            break
    return bytes(head) + body


class MqttClient:
    def __init__(self, host, port, client_id, username=None, password=None, keepalive=30,
                 on_message=None, ssl_context=None, server_hostname=None, reconnect=True,
                 log=None):
        self.host = host
        self.port = port
        self.client_id = client_id
        self.username = username
        self.password = password
        self.keepalive = keepalive
        self.on_message = on_message
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname or host
        self.reconnect = reconnect
        self.log = log or (lambda line: None)
        self._sock = None
        self._wlock = threading.Lock()
        self._pid = 0
        self._acks = {}               # packet id -> Event
        self._subs = []               # [(topic, qos)] restored after a reconnect
        self._stop = threading.Event()
        self._up = threading.Event()
        self._reader = None
        self._pinger = None
        self.reconnects = 0

    # ---- connection -----------------------------------------------------------------------------
    def _open(self):
        s = socket.create_connection((self.host, self.port), timeout=5)
        if self.ssl_context is not None:
            s = self.ssl_context.wrap_socket(s, server_hostname=self.server_hostname)
        flags = 0x02  # clean session
        payload = _str(self.client_id)
        if self.username is not None:
            flags |= 0x80
            payload += _str(self.username)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", self.keepalive) + payload
        s.sendall(_packet(CONNECT, 0, body))
        ptype, _, data = self._read_packet(s)
        if ptype != CONNACK or len(data) < 2:
            s.close()
            raise MqttError("no CONNACK")
        if data[1] != 0:
            s.close()
            raise MqttError("connection refused, code %d" % data[1])
        s.settimeout(None)
        self._sock = s
        self._up.set()

    def connect(self, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._open()
                break
            except (OSError, MqttError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self._reader = threading.Thread(target=self._read_loop, name="mqtt-reader", daemon=True)
        self._reader.start()
        self._pinger = threading.Thread(target=self._ping_loop, name="mqtt-pinger", daemon=True)
        self._pinger.start()
        return self

    def close(self):
        self._stop.set()
        s = self._sock
        if s is not None:
            try:
                with self._wlock:
                    s.sendall(_packet(DISCONNECT, 0, b""))
            except OSError:
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in (self._reader, self._pinger):
            if t is not None:
                t.join(5)

    @property
    def connected(self):
        return self._up.is_set()

    def wait_connected(self, timeout=10):
        return self._up.wait(timeout)

    # ---- packets --------------------------------------------------------------------------------
    @staticmethod
    def _read_exact(s, n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf

    def _read_packet(self, s):
        b0 = self._read_exact(s, 1)[0]
        n, shift = 0, 0
        while True:
            b = self._read_exact(s, 1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
        return b0 >> 4, b0 & 0x0F, self._read_exact(s, n) if n else b""

    def _write(self, data):
        s = self._sock
        if s is None or not self._up.is_set():
            raise ConnectionError("not connected")
        with self._wlock:
            s.sendall(data)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def publish(self, topic, payload, qos=0, retain=False, timeout=10):
        if isinstance(payload, str):
            payload = payload.encode()
        body = _str(topic)
        ev = None
        if qos:
            pid = self._next_pid()
            ev = self._acks[pid] = threading.Event()
            body += struct.pack("!H", pid)
        self._write(_packet(PUBLISH, (qos << 1) | (1 if retain else 0), body + payload))
        if threading.current_thread() is self._reader:
            return  # called from on_message: the PUBACK can only be read after we return
        if ev is not None and not ev.wait(timeout):
            raise MqttError("no PUBACK for %s" % topic)

    def subscribe(self, topics, timeout=10):
        """topics: [(filter, qos)]; kept and re-subscribed after every reconnect."""
        for t in topics:
            if t not in self._subs:
                self._subs.append(t)
        self._send_subscribe(topics, timeout)

    def _send_subscribe(self, topics, timeout=10):
        pid = self._next_pid()
        ev = self._acks[pid] = threading.Event()
        body = struct.pack("!H", pid) + b"".join(_str(t) + bytes([q]) for t, q in topics)
        self._write(_packet(SUBSCRIBE, 2, body))
        if not ev.wait(timeout):
            raise MqttError("no SUBACK")

    # ---- threads --------------------------------------------------------------------------------
    def _read_loop(self):
        while not self._stop.is_set():
            s = self._sock
            try:
                ptype, flags, data = self._read_packet(s)
            except (OSError, ConnectionError, IndexError):
                if self._stop.is_set():
                    return
                self._lost()
                continue
            if ptype == PUBLISH:
                qos = (flags >> 1) & 3
                tlen = struct.unpack("!H", data[:2])[0]
                topic = data[2:2 + tlen].decode("utf-8", "replace")
                off = 2 + tlen
                if qos:
                    pid = struct.unpack("!H", data[off:off + 2])[0]
                    off += 2
                payload = data[off:]
                if self.on_message:
                    try:
                        self.on_message(topic, payload)
                    except Exception as e:  # a tool bug must not kill the connection
                        self.log("on_message failed: %r" % e)
                if qos:
                    try:
                        self._write(_packet(PUBACK, 0, struct.pack("!H", pid)))
                    except (OSError, ConnectionError):
                        pass
            elif ptype in (PUBACK, SUBACK):
                pid = struct.unpack("!H", data[:2])[0]
                ev = self._acks.pop(pid, None)
                if ev:
                    ev.set()

    def _lost(self):
        self._up.clear()
        try:
            self._sock.close()
        except OSError:
            pass
        if not self.reconnect:
            self._stop.set()
            return
        self.log("broker connection lost; reconnecting")
        while not self._stop.is_set():
            try:
                self._open()
            except (OSError, MqttError):
                time.sleep(0.2)
                continue
            self.reconnects += 1
            self.log("reconnected to the broker")
            threading.Thread(target=self._resubscribe, daemon=True).start()
            return

    def _resubscribe(self):
        try:
            if self._subs:
                self._send_subscribe(self._subs)
        except (OSError, ConnectionError, MqttError) as e:
            self.log("resubscribe failed: %r" % e)

    def _ping_loop(self):
        while not self._stop.wait(max(1, self.keepalive / 2)):
            try:
                self._write(_packet(PINGREQ, 0, b""))
            except (OSError, ConnectionError):
                pass


def ssl_context(ca_file=None, verify=True):
    ctx = _ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    return ctx
