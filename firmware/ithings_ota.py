# The device's side of the iThings OTA conversation (DESIGN.md section 3), between the message
# formats (ithings.py) and the connection (mqtt_session.py): version reports, push admission,
# the progress codes of an update, and confirming the new image after its reboot. It talks
# through a session object -- publish(topic, payload, qos) -> bool, send(topic, payload,
# on_sent) for QoS 1 messages that must arrive, .connected -- so it runs without a socket.
#
# Rules worth knowing:
# - One update at a time, first push wins. A push for the same version while one is queued or
#   running is a duplicate (ignored); a push naming a different version is answered with a -1
#   progress "busy updating to X", so the platform knows it was not taken. When an update fails
#   the device re-reports its version, so the platform knows where it stands and can push
#   again. Redeliveries of a handled token are ignored, across reboots (push_guard.py).
# - A push for the version already running is ignored unless forced; the device answers it by
#   re-reporting reportInfo, which is how the platform judges success. A newer version is
#   installed; an older one only when forced, and a retained push is suspect (push_guard.py).
# - Download progress is reported as steps 1..99 (each whole-percent change, at most once a
#   second, QoS 0); 100 "upgraded" only once the new image is confirmed after its reboot. A
#   reset mid-update resumes the same push after the next boot while its URL is valid, up to
#   saved_offer.MAX_RESUMES times (progress again under its msgToken), else it is reported -1;
#   a rollback is reported -3 (ithings_pending.py).
# - An admitted push waits a random 0..download_jitter_ms so a fleet pushed at once does not
#   stampede the file server.
import time

from firmware import identity, ithings, ithings_pending, ithings_push, log, push_guard, saved_offer
from firmware.mqtt_session import rand_below

_log = log.get("mqtt")

PROGRESS_INTERVAL_MS = 1000


def show(display, name, *args):
    """Call display.<name>(*args) if it has one; a broken display is logged, never fatal."""
    f = getattr(display, name, None) if display is not None else None
    if f is None:
        return
    try:
        f(*args)
    except Exception as e:
        _log.warning("display %s: %r", name, e)


class Agent:
    """ctx: board, config, display, running_version; optional confirmed (the OTA check confirmed
    the image) and confirm_image(why). cfg: mqtt_ota.Settings. session: see above."""

    def __init__(self, ctx, cfg, session):
        self.ctx = ctx
        self.board = ctx.board
        self.display = getattr(ctx, "display", None)
        self.running = ctx.running_version
        self.cfg = cfg
        self.t = cfg.topics
        self.session = session
        self.report_tokens = []       # our recent reportInfo tokens (a reply must match one)
        self.ota_report_token = None
        self.seen_tokens = push_guard.Tokens(self.board.settings,
                                             ithings_pending.last_token(self.board.settings))
        self.push = None              # admitted, waiting for its jitter delay
        self.push_at = 0
        self.updating = None          # version being installed
        self.push_token = None
        self.pending = ithings_pending.Pending(ctx, cfg.confirm_by, self._progress, self.show)
        self.last_step = 0
        self.last_step_at = None
        self.rereport_at = None
        self.max_size = self._partition_size()

    def _partition_size(self):
        try:
            P = self.board.Partition
            return P(P.RUNNING).get_next_update().info()[3]
        except Exception as e:
            _log.warning("no OTA partition: %r", e)
            return 0

    def show(self, name, *args):
        show(self.display, name, *args)

    # ---- reports ----------------------------------------------------------------------------
    def _ts(self):
        try:
            return self.board.time_ms()
        except Exception:
            return time.time() * 1000

    def report_version(self):
        """reportInfo (and, when configured, the older report) -- sent on every connect."""
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
        self.session.publish(self.t.thing_up, msg, 1)
        if self.cfg.report_ota_topic and self.session.connected:
            self.ota_report_token = ithings.new_token()
            self.session.publish(self.t.ota_report,
                                 ithings.report(self.ota_report_token, self._ts(), self.running,
                                                self.cfg.module), 1)

    def _progress(self, token, step, desc, important=True, on_sent=None):
        msg = ithings.progress(token, self._ts(), step, desc, self.cfg.module)
        _log.info("progress %d %s", step, ithings.safe_desc(desc))
        if important:
            self.session.send(self.t.progress, msg, on_sent)
        else:
            self.session.publish(self.t.progress, msg, 0)

    def _rereport_soon(self):
        now = time.ticks_ms()
        if self.rereport_at is None or time.ticks_diff(now, self.rereport_at) > 10000:
            self.rereport_at = now
            self.report_version()

    # ---- incoming -----------------------------------------------------------------------------
    def handle(self, topic, msg):
        if topic not in (self.t.ota_down, self.t.thing_down):
            _log.warning("ignored message on foreign topic %s", topic)
            return
        parsed = ithings.parse_reply(msg)
        if parsed is None:
            _log.warning("ignored malformed message on %s (%d bytes)", topic, len(msg))
            return
        method, token, code, obj = parsed
        if method == "reportInfoReply" and token is not None and token in self.report_tokens:
            self.pending.on_reply(code, obj)
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
        retained = bool(getattr(self.session, "retained", False))
        if token is not None and token in self.seen_tokens:
            _log.info("ignored %spush %s: already handled", "retained " if retained else "", token)
            return
        r = ithings_push.parse_push(obj, self.running, busy, self.cfg.allowed_schemes,
                                    self.cfg.http_base, self.max_size, self.board.type,
                                    self.cfg.module)
        if r.kind == "ignore" and r.reason.startswith("busy"):
            r = ithings_push.Rejection(ithings.STEP_DOWNLOAD_FAILED, r.reason, r.token, r.version)
        elif r.kind == "push":
            r = push_guard.check(r, self.running, retained, self.cfg.allow_downgrade,
                                 self.board) or r
        if r.kind == "ignore":
            _log.info("ignored push %s: %s", r.token, r.reason)
            if r.reason.startswith("already running"):
                self._remember(r.token)
                if obj.get("method") == "upgrade":  # not for a reply that lists files
                    self._rereport_soon()
            return
        self._remember(r.token)
        if r.kind == "reject":
            _log.warning("refused %spush %s: %d %s", "retained " if retained else "", r.token,
                         r.code, r.reason)
            self._progress(r.token, r.code, r.reason)
            if not busy:  # the update in progress keeps the screen
                self.show("show_failure", "update refused: " + r.reason, "waiting for the next push")
            return
        delay = rand_below(self.cfg.jitter_ms + 1) if self.cfg.jitter_ms else 0
        _log.info("push %s: %s -> %s (%d bytes); download starts in %d ms", r.token, self.running,
                  r.version, r.size, delay)
        self.push = r
        self.push_at = time.ticks_add(time.ticks_ms(), delay)

    def _remember(self, token):
        self.seen_tokens.add(token)

    def due_push(self):
        """The admitted push once its jitter delay is over (taken: returned once), else None."""
        if self.push is None or time.ticks_diff(time.ticks_ms(), self.push_at) < 0:
            return None
        push = self.push
        self.push = None
        return push

    # ---- confirmation after an update (ithings_pending.py) -------------------------------------
    def check_pending(self):
        """After a boot: what became of the push that was being installed before it."""
        push = self.pending.check(self._ts)
        if push is not None:  # a reset cut it short: taken up again at once
            self.push = push
            self.push_at = time.ticks_ms()

    def maybe_confirmed(self):
        self.pending.maybe_confirmed()

    # ---- the update -----------------------------------------------------------------------------
    def begin(self, push):
        """An update starts: recorded first, so a reset mid-update is resumed or reported (-1)
        after the next boot. Returns why it must not start (too many resets), else None."""
        why = saved_offer.begin(self.board.settings, "push", push.version, push.url, push.md5,
                                push.size, push.token, push.delta, push.sha256)
        if why:
            return why
        self.updating = push.version
        self.push_token = push.token
        _log.info("update %s -> %s starts", self.running, push.version)
        self.show("show_updating", 0, 0, self.running, push.version)
        self.pending.record(push, "download")
        self._progress(push.token, 1, "downloading", False)
        self.last_step = 1
        self.last_step_at = time.ticks_ms()

    def on_download(self, done, total, rate):
        """The updater's progress: a step report on each whole-percent change, at most once per
        PROGRESS_INTERVAL_MS, and the display."""
        now = time.ticks_ms()
        pct = done * 100 // total if total else 0
        step = 1 if pct < 1 else (99 if pct > 99 else pct)
        due = self.last_step_at is None or \
            time.ticks_diff(now, self.last_step_at) >= PROGRESS_INTERVAL_MS
        if step != self.last_step and due:
            self.last_step = step
            self.last_step_at = now
            if self.session.connected:
                self._progress(self.push_token, step, "downloading %d%%" % pct, False)
            self.show("show_updating", pct, (rate or 0) / 1024, self.running, self.updating)

    def installed(self, push, label):
        self.updating = None
        self.pending.installed(push)
        _log.info("installed %s in %s; rebooting", push.version, label)
        self._progress(push.token, 99, "installed, rebooting", False)
        self.show("show_success", "update %s installed, restarting" % push.version)

    def failed(self, push, code, reason):
        self.updating = None
        if code not in ithings.FAIL_CODES:
            code = ithings.STEP_DOWNLOAD_FAILED
        _log.error("update to %s failed (%d): %s", push.version, code, reason)
        self.show("show_failure", "update to %s failed: %s" % (push.version, reason),
                  "still running %s; waiting for the next push" % self.running)
        self.pending.failed(push, code, reason)
        self._progress(push.token, code, reason)
        self._rereport_soon()
        self.show("show_idle", self.running)
