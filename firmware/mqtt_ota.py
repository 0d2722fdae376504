# Upgrade pushes over MQTT (iThings, DESIGN.md section 3): the LISTEN state of the app. It only
# wires the layers: the connection settings (Settings, below), the session (mqtt_session.py:
# connect, reconnect with jittered backoff, QoS-1 queue, keepalive) and the platform logic
# (ithings_ota.py: reports, admission, progress codes, confirmation), and runs an admitted push
# through updater.install() -> persist the pending version + token -> reboot.
#
# The connection is kept alive during the download: the updater's tick services the session
# every 250 ms while bytes flow, whatever the chunk fill (update/pace.py). A read that gets
# nothing blocks for at most the updater's timeout (15 s); keep mqtt.keepalive / 2 above that
# (the default 60 s is).
#
# config.json "mqtt" keys read here (besides config.py's): download_jitter_ms (5000), module
# ("default"), ca_file (else tls.ca_file), confirm_timeout_s (none: the top-level one, see
# confirm_deadline.py), reconnect_max_ms (60000). deviceName defaults to the
# Wi-Fi MAC as 12 upper-case hex digits; client id is {productID}&{deviceName}.
import time

from firmware import confirm_deadline, ithings, log, mqtt_config, tls_config, watchdog
from firmware.ithings_ota import Agent
from firmware.mqtt_session import RECONNECT_MAX_MS, Session

_log = log.get("mqtt")

K_MQTT = "mqtt"                  # the OTA check's persisted `mqtt` section
DEFAULT_JITTER_MS = 5000


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        _log.error("cannot read %s: %s", path, e)
        return None


class Settings:
    """Connection settings: config.json `mqtt`, or the OTA check's `mqtt` section when
    mqtt_config's rule says that section is the push broker."""

    def __init__(self, config, mqtt_settings, mac):
        cfg = config.get("mqtt") or {}
        p = mqtt_config.pick(cfg, mqtt_settings)  # the broker rule: config.json wins
        self.source = p["source"]
        self.tls, self.host, self.port = p["tls"], p["host"], p["port"]
        self.topics = ithings.Topics(p["product_id"],
                                     p["device_name"] or ithings.default_device_name(mac))
        self.client_id = p["client_id"] or self.topics.client_id
        self.username, self.password = p["username"], p["password"]
        self.keepalive = p["keepalive"]
        self.http_base = cfg.get("http_base")
        self.report_ota_topic = bool(cfg.get("report_ota_topic"))
        self.allowed_schemes = cfg.get("allowed_schemes") or ["https", "http"]
        j = cfg.get("download_jitter_ms", DEFAULT_JITTER_MS)
        self.jitter_ms = j if isinstance(j, int) and j >= 0 else DEFAULT_JITTER_MS
        self.module = cfg.get("module") or "default"
        self.reconnect_max_ms = cfg.get("reconnect_max_ms") or RECONNECT_MAX_MS
        tls = config.get("tls") or {}
        self.verify = tls.get("verify", True) is not False
        ca_file = cfg.get("ca_file") or tls.get("ca_file")
        self.ca = _read_file(ca_file) if ca_file else None
        self.confirm_by = config.get("confirm_by", "ota_check")
        self.allow_downgrade = cfg.get("allow_downgrade") is True  # push_guard.py

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
        stored = getattr(ctx, "mqtt_settings", None)
        if stored is None:
            stored = ctx.board.settings.get(K_MQTT)
        self.cfg = Settings(ctx.config, stored, ctx.board.mac())
        self.session = Session(self.cfg, self.cfg.topics.subscriptions())
        self.agent = Agent(ctx, self.cfg, self.session)
        self.session.handler = self.agent.handle
        self.session.on_connect = self.agent.report_version

    def _on_download(self, done, total, rate):
        """updater.install's progress callback: report, show, and keep MQTT alive."""
        self.agent.on_download(done, total, rate)
        self.session.service()

    def _run_update(self, push):
        from firmware import updater  # loaded only when needed (RAM)
        agent = self.agent
        why = agent.begin(push)
        if why:
            return agent.failed(push, ithings.STEP_DOWNLOAD_FAILED, why)
        # force: the push names the version to run (admission already refused the running one
        # and unforced downgrades); the updater still checks the image header carries it.
        offer = updater.Offer(push.url, size=push.size, md5=push.md5, version=push.version,
                              force=True, delta=push.delta, sha256=getattr(push, "sha256", None))
        try:
            tls_of = getattr(self.ctx, "tls", None)
            label = updater.install(self.board, offer, agent.running, progress=self._on_download,
                                    tls=tls_of() if tls_of else self.cfg.http_tls(),
                                    min_rate=updater.min_rate(self.ctx.config),
                                    tick=self.session.service, config=self.ctx.config)
        except updater.UpdateError as e:
            return agent.failed(push, e.code, e.reason)
        except MemoryError:
            return agent.failed(push, ithings.STEP_DOWNLOAD_FAILED, "out of memory")
        except Exception as e:
            _log.error("update crashed: %r", e)
            return agent.failed(push, ithings.STEP_WRITE_FAILED, "internal error")
        agent.installed(push, label)
        self._reboot()

    def _reboot(self):
        self.session.disconnect()
        self.board.reboot()

    def run(self, duration_ms=None):
        t = self.cfg.topics
        agent = self.agent
        session = self.session
        _log.info("listening as %s/%s on %s:%d", t.product_id, t.device_name,
                  self.cfg.host, self.cfg.port)
        agent.show("show_idle", agent.running)
        agent.check_pending()
        confirm_deadline.arm(self.board, self.ctx.config, agent.running)  # no-op if the app did
        if duration_ms is None:
            duration_ms = self.cfg.recheck_ms(self.ctx.config)
        end = None if duration_ms is None else time.ticks_add(time.ticks_ms(), duration_ms)
        while end is None or time.ticks_diff(end, time.ticks_ms()) > 0:
            session.service()
            agent.maybe_confirmed()
            confirm_deadline.check()  # reboots when a new image is not confirmed in time
            push = agent.due_push()
            if push is not None:
                self._run_update(push)
                continue
            ms = 200
            if agent.push is not None:  # wake up when the admitted push is due
                left = time.ticks_diff(agent.push_at, time.ticks_ms())
                if left < ms:
                    ms = left if left > 0 else 0
            session.idle(ms)
        session.disconnect()
        return "recheck"


def listen(ctx, duration_ms=None):
    """The app's LISTEN state: wait for upgrade pushes for duration_ms (None: the config's
    recheck_interval_s, default 3600 s), then return "recheck" so the app runs its OTA check.

    ctx: board, config, display, running_version; optional mqtt_settings (else the persisted
    "mqtt" setting), confirmed (the OTA check confirmed the image), confirm_image(why), tls().
    Returns "not configured" when mqtt.host / product_id are missing (after idling for the same
    duration, so a caller that loops does not hammer its server). A successful update, and an
    unconfirmed image past its deadline (confirm_deadline.py), end in board.reboot() and do
    not return."""
    why = None
    try:
        listener = Listener(ctx)
        if not listener.cfg.host:
            why = "mqtt.host not configured"
    except ValueError as e:
        why = str(e)
    if why is None:
        return listener.run(duration_ms)
    _log.info("MQTT upgrade pushes off: %s", why)  # a setting, not a fault (issue 15)
    if duration_ms is None:
        v = ctx.config.get("recheck_interval_s", 3600)
        duration_ms = int(v * 1000) if isinstance(v, (int, float)) and v > 0 else 3600000
    watchdog.sleep_ms(duration_ms)  # an idle hour must not starve the watchdog
    return "not configured"
