# Upgrade pushes over MQTT (iThings, DESIGN.md section 3): the LISTEN state of the app.
#
# listen(ctx) connects with umqtt.simple (pinned, unmodified), subscribes the device's two down
# topics ($ota/down/upgrade and $thing/down/property, never wildcards), reports the running
# version (reportInfo) on every connect, and turns an admitted push into updater.install() ->
# persist the pending version + token -> reboot. After the reboot it confirms the new image when
# the platform answers reportInfo with reportInfoReply code 200 (config confirm_by "mqtt"; with
# "ota_check" the app's check confirms it), or reports the rollback when the old image came back.
#
# Rules worth knowing:
# - One update at a time, first push wins. A push for the same version while one is queued or
#   running is a duplicate (ignored); a push naming a different version is ignored as "busy"
#   (logged). When an update fails the device re-reports its version, so the platform knows
#   where it stands and can push again. Redeliveries of a handled token are ignored.
# - A push for the version already running is ignored unless forced (DESIGN.md section 3); the
#   device answers it by re-reporting reportInfo, which is how the platform judges success.
#   Other versions, older ones included, are installed: the platform names the version to run.
# - Download progress is reported as steps 1..99 (each whole-percent change, at most once a
#   second); 100 "upgraded" is sent only once the new image is confirmed after its reboot.
#   A reset mid-update is reported as -1 after the next boot, a rollback as -3.
# - Every download starts after a random delay of 0..mqtt.download_jitter_ms so a fleet pushed
#   at once does not stampede the file server.
# - The connection is kept alive during the download (the updater's progress callback pings and
#   reads); when it drops it is re-established with exponential backoff plus jitter, and the
#   reports that matter (failures, rollback, upgraded) wait in a small queue until delivered.
#   The download blocks in HTTP reads for at most the updater's timeout (15 s); keep
#   mqtt.keepalive * 1.5 above that (the default 60 s is).
#
# config.json "mqtt" keys read here (besides config.py's): download_jitter_ms (5000), module
# ("default"), ca_file (else tls.ca_file), confirm_timeout_s (none: reboot -> roll back when an
# updated image is not confirmed in time), reconnect_max_ms (60000). deviceName defaults to the
# Wi-Fi MAC as 12 upper-case hex digits; client id is {productID}&{deviceName}.
import errno
import os
import time

from firmware import compat  # noqa: F401 -- registers `ussl` for umqtt.simple's TLS
from firmware import identity, ithings, log, mqtt_transport, tls_config
from firmware.mqtt_transport import Net, TimeoutSocket
from umqtt import simple as _umqtt

_log = log.get("mqtt")

K_PENDING = "mqtt_ota_pending"   # {"pending_version", "token", "from_version", "stage"}:
#                                  stage "download" while installing, "reboot" once set to boot
K_LAST = "mqtt_ota_last"         # {"token", "version", "step"} of the last finished push
K_MQTT = "mqtt"                  # the OTA check's persisted `mqtt` section
DEFAULT_JITTER_MS = 5000
IO_TIMEOUT_MS = 10000            # any single socket wait (connect, handshake, packet)
RECONNECT_BASE_MS = 1000
RECONNECT_MAX_MS = 60000
PROGRESS_INTERVAL_MS = 1000
QUEUE_MAX = 8
INBOX_MAX = 16
_MQTT_ERRORS = {1: "unacceptable protocol version", 2: "client id rejected",
                3: "server unavailable", 4: "bad username or password", 5: "not authorised"}


_umqtt.socket = Net(IO_TIMEOUT_MS)  # umqtt.simple's `socket`: connects time out


def _rand_below(n):
    """Uniform-ish int in [0, n) from the hardware RNG (no shared seed across a fleet)."""
    if n <= 0:
        return 0
    b = os.urandom(4)
    return ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) % n


def _errtext(e):
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


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _log.error("cannot read %s: %s", path, e)
        return None


def _split_endpoint(endpoint, default_port):
    host, port = endpoint, default_port
    i = endpoint.rfind(":")
    if i > 0 and endpoint[i + 1:].isdigit():
        host, port = endpoint[:i], int(endpoint[i + 1:])
    return host, port


class Settings:
    """Connection settings: config.json `mqtt`, overridden by the OTA check's `mqtt` section."""

    def __init__(self, config, mqtt_settings, mac):
        cfg = config.get("mqtt") or {}
        over = mqtt_settings if isinstance(mqtt_settings, dict) else {}
        self.tls = bool(cfg.get("tls"))
        self.host = cfg.get("host")
        self.port = cfg.get("port") or (8883 if self.tls else 1883)
        if over.get("endpoint"):
            self.host, self.port = _split_endpoint(over["endpoint"], self.port)
        if self.port == 8883:
            self.tls = True
        product_id = cfg.get("product_id")
        device_name = cfg.get("device_name")
        client_id = over.get("client_id")
        if client_id and "&" in client_id and not product_id:
            product_id, device_name = client_id.split("&", 1)
        self.topics = ithings.Topics(product_id, device_name or ithings.default_device_name(mac))
        self.client_id = client_id or self.topics.client_id
        self.username = over["username"] if "username" in over else cfg.get("username")
        self.password = over["password"] if "password" in over else cfg.get("password")
        if self.username == "":
            self.username = None
        ka = over.get("keepalive") or cfg.get("keepalive") or 60
        self.keepalive = ka if isinstance(ka, int) and 0 < ka < 65536 else 60
        self.http_base = cfg.get("http_base")
        self.report_ota_topic = bool(cfg.get("report_ota_topic"))
        self.allowed_schemes = cfg.get("allowed_schemes") or ["https", "http"]
        j = cfg.get("download_jitter_ms", DEFAULT_JITTER_MS)
        self.jitter_ms = j if isinstance(j, int) and j >= 0 else DEFAULT_JITTER_MS
        self.module = cfg.get("module") or "default"
        self.confirm_timeout_s = cfg.get("confirm_timeout_s")
        self.reconnect_max_ms = cfg.get("reconnect_max_ms") or RECONNECT_MAX_MS
        tls = config.get("tls") or {}
        self.verify = tls.get("verify", True) is not False
        ca_file = cfg.get("ca_file") or tls.get("ca_file")
        self.ca = _read_file(ca_file) if ca_file else None
        self.confirm_by = config.get("confirm_by", "ota_check")

    def ssl_context(self):
        if not self.verify:
            _log.warning("MQTT TLS certificate verification is OFF (tls.verify=false)")
        return tls_config.client_context(self.ca, self.verify)

    def http_tls(self):
        return {"verify": self.verify, "ca": self.ca}

    def recheck_ms(self, config):
        v = config.get("recheck_interval_s", 3600)
        return int(v * 1000) if isinstance(v, (int, float)) and v > 0 else None


class Listener:
    def __init__(self, ctx):
        self.ctx = ctx
        self.board = ctx.board
        self.display = getattr(ctx, "display", None)
        self.running = ctx.running_version
        stored = getattr(ctx, "mqtt_settings", None)
        if stored is None:
            stored = ctx.board.settings.get(K_MQTT)
        self.cfg = Settings(ctx.config, stored, ctx.board.mac())
        self.t = self.cfg.topics
        self.client = None
        self.sock = None
        self.failures = 0
        self.next_connect = time.ticks_ms()
        self.ping_at = None           # when the unanswered ping went out
        self.tx_at = time.ticks_ms()
        self.queue = []               # [topic, payload, on_sent] waiting for a connection
        self.report_tokens = []       # our recent reportInfo tokens (a reply must match one)
        self.ota_report_token = None
        self.seen_tokens = []         # push tokens handled this boot
        last = self.board.settings.get(K_LAST)
        if isinstance(last, dict) and last.get("token"):
            self.seen_tokens.append(last["token"])
        self.push = None              # admitted, waiting for its jitter delay
        self.push_at = 0
        self.updating = None          # version being installed
        self.confirm = None           # pending record waiting for reportInfoReply
        self.confirmed_by_reply = False
        self.valid_marked = False
        self.last_step = 0
        self.last_step_at = None
        self.started = time.ticks_ms()
        self.rereport_at = None
        self.inbox = []               # (topic, msg) received, handled outside umqtt's loops
        self.max_size = self._partition_size()

    # ---- display (never fatal) --------------------------------------------------------------
    def _show(self, name, *args):
        d = self.display
        f = getattr(d, name, None) if d is not None else None
        if f is None:
            return
        try:
            f(*args)
        except Exception as e:
            _log.warning("display %s: %r", name, e)

    def _partition_size(self):
        try:
            P = self.board.Partition
            return P(P.RUNNING).get_next_update().info()[3]
        except Exception as e:
            _log.warning("no OTA partition: %r", e)
            return 0

    # ---- connection ---------------------------------------------------------------------------
    def _now(self):
        return time.ticks_ms()

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
        try:
            mqtt_transport.connect(client, IO_TIMEOUT_MS)
            self.sock = TimeoutSocket(client.sock, IO_TIMEOUT_MS)
            client.sock = self.sock
            self.client = client
            for topic in self.t.subscriptions():
                client.subscribe(topic.encode(), qos=1)
        except BaseException:
            self.client = None
            try:
                (self.sock or client.sock).close()
            except Exception:
                pass
            self.sock = None
            raise
        self.tx_at = self._now()
        self.ping_at = None
        self.failures = 0
        _log.info("connected; subscribed %s and %s", self.t.ota_down, self.t.thing_down)
        self._report_version()
        self._flush_queue()

    def _drop(self, why):
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
        d = RECONNECT_BASE_MS
        for _ in range(self.failures - 1):
            d *= 2
            if d >= self.cfg.reconnect_max_ms:
                d = self.cfg.reconnect_max_ms
                break
        d = d // 2 + _rand_below(d // 2 + 1)  # jitter: half to full delay
        self.next_connect = time.ticks_add(self._now(), d)
        _log.info("reconnect in %d ms", d)

    def _try_connect(self):
        if self.client is not None or time.ticks_diff(self.next_connect, self._now()) > 0:
            return
        try:
            self._connect()
        except Exception as e:  # TLS verification failures arrive as ValueError
            _log.warning("connect to %s:%d failed: %s", self.cfg.host, self.cfg.port, _errtext(e))
            self._schedule_reconnect()

    def _service(self):
        """Read what the broker sent (non-blocking), keep the connection alive, detect death."""
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
            now = self._now()
            half = self.cfg.keepalive * 500
            if self.ping_at is not None:
                if time.ticks_diff(self.sock.rx_at, self.ping_at) >= 0:
                    self.ping_at = None  # something (the PINGRESP) came back
                elif time.ticks_diff(now, self.ping_at) > half:
                    self._drop("no answer to ping")
                    return
            if self.ping_at is None and time.ticks_diff(now, self.tx_at) >= half:
                self.client.ping()
                self.ping_at = self.tx_at = now
        except Exception as e:
            self._drop(_errtext(e))
        self._drain()

    def _publish(self, topic, payload, qos):
        """Publish now; False (and the connection dropped) when that fails."""
        if self.client is None:
            return False
        try:
            self.client.publish(topic.encode(), payload, qos=qos)
            self.tx_at = self._now()
            return True
        except Exception as e:
            self._drop(_errtext(e))
            return False

    def _send(self, topic, payload, on_sent=None):
        """A message that matters (QoS 1): sent now, or queued until the next connection."""
        if self._publish(topic, payload, 1):
            if on_sent:
                on_sent()
            return
        if len(self.queue) >= QUEUE_MAX:
            self.queue.pop(0)
        self.queue.append([topic, payload, on_sent])

    def _flush_queue(self):
        while self.queue and self.client is not None:
            topic, payload, on_sent = self.queue[0]
            if not self._publish(topic, payload, 1):
                return
            self.queue.pop(0)
            if on_sent:
                on_sent()

    # ---- reports --------------------------------------------------------------------------------
    def _ts(self):
        try:
            return self.board.time_ms()
        except Exception:
            return time.time() * 1000

    def _report_version(self):
        token = ithings.new_token()
        self.report_tokens.append(token)
        if len(self.report_tokens) > 4:
            self.report_tokens.pop(0)
        try:
            w = self.board.wifi()
        except Exception:
            w = {}
        msg = ithings.report_info(token, self._ts(), self.running, self.cfg.module,
                                  identity.format_mac(self.board.mac()), w.get("rssi"), w.get("ip"))
        _log.info("reportInfo version %s (token %s)", self.running, token)
        self._publish(self.t.thing_up, msg, 1)
        if self.cfg.report_ota_topic and self.client is not None:
            self.ota_report_token = ithings.new_token()
            self._publish(self.t.ota_report,
                          ithings.report(self.ota_report_token, self._ts(), self.running,
                                         self.cfg.module), 1)

    def _progress(self, token, step, desc, important=True, on_sent=None):
        msg = ithings.progress(token, self._ts(), step, desc, self.cfg.module)
        _log.info("progress %d %s", step, ithings.safe_desc(desc))
        if important:
            self._send(self.t.progress, msg, on_sent)
        else:
            self._publish(self.t.progress, msg, 0)

    # ---- incoming -----------------------------------------------------------------------------
    def _on_message(self, topic, msg):
        # umqtt.simple calls this from inside its own read loops (also while a QoS 1 publish
        # waits for its PUBACK). Publishing from here would nest those loops, and the inner one
        # swallows the outer PUBACK; so only queue the message, _drain() handles it.
        if len(self.inbox) >= INBOX_MAX:
            _log.warning("inbox full: dropped a message on %s", topic)
            return
        self.inbox.append((topic, msg))

    def _drain(self):
        while self.inbox:
            topic, msg = self.inbox.pop(0)
            try:
                self._handle(topic.decode() if isinstance(topic, bytes) else topic, msg)
            except Exception as e:  # a bad message must never look like a broken connection
                _log.error("message on %s not handled: %r", topic, e)

    def _handle(self, topic, msg):
        if topic not in (self.t.ota_down, self.t.thing_down):
            _log.warning("ignored message on foreign topic %s", topic)
            return
        parsed = ithings.parse_reply(msg)
        if parsed is None:
            _log.warning("ignored malformed message on %s (%d bytes)", topic, len(msg))
            return
        method, token, code, obj = parsed
        if method == "reportInfoReply" and token is not None and token in self.report_tokens:
            self._on_report_reply(code, obj)
            if not ithings.has_files(obj):
                return
        elif method in ("reportInfoReply", "reportReply") and token is not None \
                and token == self.ota_report_token:
            _log.info("reply to report: code %s (ignored)", code)
            return
        if method == "upgrade" or ithings.has_files(obj):
            self._on_push(obj)
        else:
            _log.info("ignored %s on %s", method, topic)

    def _on_push(self, obj):
        busy = self.updating or (self.push.version if self.push else None)
        token = ithings.token_of(obj)
        if token is not None and token in self.seen_tokens and not busy:
            _log.info("ignored push %s: already handled", token)
            return
        r = ithings.parse_push(obj, self.running, busy, self.cfg.allowed_schemes,
                               self.cfg.http_base, self.max_size, self.board.type, self.cfg.module)
        if r.kind == "ignore":
            _log.info("ignored push %s: %s", r.token, r.reason)
            if r.reason.startswith("already running"):
                self._remember(r.token)
                if obj.get("method") == "upgrade":  # not for a reply that lists files
                    self._rereport_soon()
            return
        self._remember(r.token)
        if r.kind == "reject":
            _log.warning("refused push %s: %d %s", r.token, r.code, r.reason)
            self._progress(r.token, r.code, r.reason)
            self._show("show_failure", "update refused: " + r.reason, "waiting for the next push")
            return
        delay = _rand_below(self.cfg.jitter_ms + 1) if self.cfg.jitter_ms else 0
        _log.info("push %s: %s -> %s (%d bytes); download starts in %d ms", r.token, self.running,
                  r.version, r.size, delay)
        self.push = r
        self.push_at = time.ticks_add(self._now(), delay)

    def _remember(self, token):
        if token is not None and token not in self.seen_tokens:
            self.seen_tokens.append(token)
            if len(self.seen_tokens) > 16:
                self.seen_tokens.pop(0)

    def _rereport_soon(self):
        now = self._now()
        if self.rereport_at is None or time.ticks_diff(now, self.rereport_at) > 10000:
            self.rereport_at = now
            self._report_version()

    # ---- confirmation after an update -----------------------------------------------------------
    def _check_pending(self):
        p = self.board.settings.get(K_PENDING)
        if not isinstance(p, dict) or not p.get("pending_version"):
            return
        token = p.get("token") or ithings.new_token()
        if p["pending_version"] == self.running:
            _log.info("running the new version %s; waiting for reportInfoReply to confirm it",
                      self.running)
            self.confirm = p
            return
        if p.get("stage") == "download":  # a reset (power loss) cut the update short
            _log.warning("update to %s was interrupted by a reset", p["pending_version"])
            self._show("show_failure", "update to %s interrupted" % p["pending_version"],
                       "running %s; waiting for the next push" % self.running)
            self._finish(token, p["pending_version"], ithings.STEP_DOWNLOAD_FAILED,
                         "interrupted by a reset")
            return
        why = "rolled back to %s" % self.running
        _log.warning("update to %s did not stick: %s", p["pending_version"], why)
        self._show("show_failure", "update to %s rolled back" % p["pending_version"],
                   "running %s" % self.running)
        self._finish(token, p["pending_version"], ithings.STEP_WRITE_FAILED, why)

    def _finish(self, token, version, step, desc):
        """Report the end of a push; forget the pending record once the report is delivered."""
        settings = self.board.settings

        def done():
            settings.set(K_LAST, {"token": token, "version": version, "step": step})
            settings.delete(K_PENDING)
        self._progress(token, step, desc, True, done)

    def _on_report_reply(self, code, obj):
        if code != 200:
            _log.warning("reportInfoReply code %s: %s", code, obj.get("msg") or obj.get("status"))
            return
        _log.info("reportInfoReply 200")
        self.confirmed_by_reply = True
        if self.cfg.confirm_by == "mqtt" and not self.valid_marked:
            confirm = getattr(self.ctx, "confirm_image", None)
            try:
                if confirm is not None:
                    self.valid_marked = bool(confirm("reportInfoReply 200"))
                else:
                    self.board.Partition.mark_app_valid_cancel_rollback()
                    self.valid_marked = True
                    _log.info("image marked valid (confirm_by mqtt)")
            except Exception as e:
                _log.error("mark valid failed: %r", e)
        self._maybe_confirmed()

    def _maybe_confirmed(self):
        p = self.confirm
        if p is None or not self.confirmed_by_reply:
            return
        if self.cfg.confirm_by == "mqtt":
            if not self.valid_marked:
                return
        elif not getattr(self.ctx, "confirmed", True):
            return  # the OTA check confirms this image; report once it has
        self.confirm = None
        _log.info("update to %s confirmed", self.running)
        self._show("show_success", "updated to %s" % self.running)
        self._finish(p.get("token") or ithings.new_token(), self.running, ithings.STEP_DONE,
                     "upgraded to %s" % self.running)

    def _confirm_timed_out(self):
        t = self.cfg.confirm_timeout_s
        if self.confirm is None or not isinstance(t, (int, float)) or t <= 0:
            return False
        return time.ticks_diff(self._now(), self.started) > t * 1000

    # ---- the update -----------------------------------------------------------------------------
    def _on_download(self, done, total, rate):
        """updater.install's progress callback: report, show, and keep MQTT alive."""
        now = self._now()
        pct = done * 100 // total if total else 0
        step = 1 if pct < 1 else (99 if pct > 99 else pct)
        due = self.last_step_at is None or \
            time.ticks_diff(now, self.last_step_at) >= PROGRESS_INTERVAL_MS
        if step != self.last_step and due:
            self.last_step = step
            self.last_step_at = now
            if self.client is not None:
                self._progress(self.push_token, step, "downloading %d%%" % pct, False)
            self._show("show_updating", pct, (rate or 0) / 1024, self.running, self.updating)
        self._service()

    def _run_update(self):
        from firmware import updater  # loaded only when needed (RAM)
        push = self.push
        self.push = None
        self.updating = push.version
        self.push_token = push.token
        self.last_step = 0
        self.last_step_at = None
        _log.info("update %s -> %s starts", self.running, push.version)
        self._show("show_updating", 0, 0, self.running, push.version)
        # Recorded first, so a reset mid-update is reported (-1) after the next boot.
        self.board.settings.set(K_PENDING, {"pending_version": push.version, "token": push.token,
                                            "from_version": self.running, "stage": "download"})
        self._progress(push.token, 1, "downloading", False)
        self.last_step = 1
        self.last_step_at = self._now()
        # force: the push names the version to run, older or newer (admission already refused
        # the running one); the updater still checks the image header carries that version.
        offer = updater.Offer(push.url, size=push.size, md5=push.md5, version=push.version,
                              force=True)
        try:
            tls_of = getattr(self.ctx, "tls", None)
            label = updater.install(self.board, offer, self.running, progress=self._on_download,
                                    tls=tls_of() if tls_of else self.cfg.http_tls())
        except updater.UpdateError as e:
            return self._failed(push, e.code, e.reason)
        except MemoryError:
            return self._failed(push, ithings.STEP_DOWNLOAD_FAILED, "out of memory")
        except Exception as e:
            _log.error("update crashed: %r", e)
            return self._failed(push, ithings.STEP_WRITE_FAILED, "internal error")
        finally:
            self.updating = None
        self.board.settings.set(K_PENDING, {"pending_version": push.version, "token": push.token,
                                            "from_version": self.running, "stage": "reboot"})
        _log.info("installed %s in %s; rebooting", push.version, label)
        self._progress(push.token, 99, "installed, rebooting", False)
        self._show("show_success", "update %s installed, restarting" % push.version)
        self._reboot()

    def _failed(self, push, code, reason):
        if code not in ithings.FAIL_CODES:
            code = ithings.STEP_DOWNLOAD_FAILED
        _log.error("update to %s failed (%d): %s", push.version, code, reason)
        self._show("show_failure", "update to %s failed: %s" % (push.version, reason),
                   "still running %s; waiting for the next push" % self.running)
        settings = self.board.settings
        settings.set(K_LAST, {"token": push.token, "version": push.version, "step": code})
        settings.delete(K_PENDING)
        self._progress(push.token, code, reason)
        self._rereport_soon()
        self._show("show_idle", self.running)

    def _disconnect(self):
        if self.client is not None:
            try:
                self.client.disconnect()
            except Exception:
                pass
            self.client = None

    def _reboot(self):
        self._disconnect()
        self.board.reboot()

    # ---- main loop ------------------------------------------------------------------------------
    def run(self, duration_ms=None):
        _log.info("listening as %s/%s on %s:%d", self.t.product_id, self.t.device_name,
                  self.cfg.host, self.cfg.port)
        self._show("show_idle", self.running)
        self._check_pending()
        if duration_ms is None:
            duration_ms = self.cfg.recheck_ms(self.ctx.config)
        end = None if duration_ms is None else time.ticks_add(self._now(), duration_ms)
        while end is None or time.ticks_diff(end, self._now()) > 0:
            self._service()
            self._maybe_confirmed()
            if self._confirm_timed_out():
                _log.error("new image %s not confirmed within %s s; rebooting to roll back",
                           self.running, self.cfg.confirm_timeout_s)
                self._reboot()
                return "reboot"
            if self.push is not None and time.ticks_diff(self._now(), self.push_at) >= 0:
                self._run_update()
                continue
            self._idle(200)
        self._disconnect()
        return "recheck"

    def _idle(self, ms):
        if self.push is not None:
            left = time.ticks_diff(self.push_at, self._now())
            if left < ms:
                ms = left if left > 0 else 0
        if self.client is None:
            left = time.ticks_diff(self.next_connect, self._now())
            if left < ms:
                ms = left if left > 0 else 0
            time.sleep_ms(ms)
            return
        try:
            self.sock.wait_readable(ms)
        except Exception as e:
            self._drop(_errtext(e))


def listen(ctx, duration_ms=None):
    """The app's LISTEN state: wait for upgrade pushes for duration_ms (None: the config's
    recheck_interval_s, default 3600 s), then return "recheck" so the app runs its OTA check.

    ctx: board, config, display, running_version; optional mqtt_settings (else the persisted
    "mqtt" setting), confirmed (the OTA check confirmed the image), confirm_image(why), tls().
    Returns "not configured" when mqtt.host / product_id are missing (after idling for the same
    duration, so a caller that loops does not hammer its server), "reboot" when an unconfirmed
    image must roll back (mqtt.confirm_timeout_s); a successful update ends in board.reboot()
    and does not return."""
    why = None
    try:
        listener = Listener(ctx)
        if not listener.cfg.host:
            why = "mqtt.host not configured"
    except ValueError as e:
        why = str(e)
    if why is None:
        return listener.run(duration_ms)
    _log.error("MQTT upgrade pushes off: %s", why)
    if duration_ms is None:
        v = ctx.config.get("recheck_interval_s", 3600)
        duration_ms = int(v * 1000) if isinstance(v, (int, float)) and v > 0 else 3600000
    time.sleep_ms(duration_ms)
    return "not configured"
