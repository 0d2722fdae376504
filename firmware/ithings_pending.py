# What became of a pushed update across the boots it spans (DESIGN.md section 3), for
# ithings_ota.Agent. The pending record (K_PENDING, in settings) is written when the download
# starts (stage "download") and again once the image is set to boot ("reboot"); the boot after
# it reads the record:
# - running the pushed version: reported 100 once the platform's reportInfoReply 200 (and,
#   unless confirm_by is mqtt, the OTA check) vouches for the image;
# - stage "download": a reset cut the update short; the same push is resumed while its URL is
#   valid, up to saved_offer.MAX_RESUMES times, else reported -1;
# - otherwise the image rolled back: reported -3.
# The record is forgotten only once that report is delivered (a reset before then reports again).
from firmware import ithings, ithings_push, log, push_guard, refused_offers, saved_offer

_log = log.get("mqtt")

K_PENDING = "mqtt_ota_pending"   # {"pending_version", "token", "from_version", "stage"}:
#                                  stage "download" while installing, "reboot" once set to boot
K_LAST = "mqtt_ota_last"         # {"token", "version", "step"} of the last finished push


def last_token(settings):
    """The token of the last finished push (push_guard keeps it as handled)."""
    last = settings.get(K_LAST)
    return last.get("token") if isinstance(last, dict) else None


class Pending:
    """ctx: as for Agent. progress(token, step, desc, important, on_sent) and show(name, *args):
    the agent's own, so reports and the display go the same way as the rest of the update."""

    def __init__(self, ctx, confirm_by, progress, show):
        self.ctx = ctx
        self.board = ctx.board
        self.running = ctx.running_version
        self.confirm_by = confirm_by
        self.progress = progress
        self.show = show
        self.confirm = None           # pending record waiting for reportInfoReply
        self.confirmed_by_reply = False
        self.valid_marked = False

    def record(self, push, stage):
        self.board.settings.set(K_PENDING, {"pending_version": push.version, "token": push.token,
                                            "from_version": self.running, "stage": stage})

    def close(self, token, version, step):
        """The push is over: kept as the last one, its pending record forgotten."""
        settings = self.board.settings
        settings.set(K_LAST, {"token": token, "version": version, "step": step})
        settings.delete(K_PENDING)

    def installed(self, push):
        """Set to boot: nothing left to resume; the record waits for the reboot."""
        saved_offer.forget(self.board.settings)
        self.record(push, "reboot")
        refused_offers.forget(self.board)

    def failed(self, push, code, reason):
        """Nothing left to resume, and the same image is not fetched again for a while."""
        saved_offer.forget(self.board.settings)
        refused_offers.refused(self.board, push_guard.offer_id(push), push.version, code, reason)
        self.close(push.token, push.version, code)

    def check(self, clock):
        """After a boot: what became of the push that was being installed before it. Returns
        the push to take up again (a reset interrupted it), else None. clock() -> epoch ms."""
        p = self.board.settings.get(K_PENDING)
        if not isinstance(p, dict) or not p.get("pending_version"):
            return None
        token = p.get("token") or ithings.new_token()
        if p["pending_version"] == self.running:
            _log.info("running the new version %s; waiting for reportInfoReply to confirm it",
                      self.running)
            self.confirm = p
            if not p.get("ran"):  # the new image got this far: a rollback now is its own doing
                p["ran"] = True
                self.board.settings.set(K_PENDING, p)
            return None
        if p.get("stage") == "download":  # a reset (power loss) cut the update short
            return self._interrupted(p, token, clock)
        why = "rolled back to %s" % self.running
        if p.get("why"):  # confirm_deadline.py said why before the reset
            why = "%s: %s %s" % (why, p["pending_version"], p["why"])
        elif not p.get("ran"):  # install_record.py's case, for a push: the platform may retry
            why = "%s: %s never ran (cut at first boot)" % (
                why, p["pending_version"])
        _log.warning("update to %s did not stick: %s", p["pending_version"], why)
        self.show("show_failure", "update to %s rolled back" % p["pending_version"],
                  "running %s" % self.running)
        self._finish(token, p["pending_version"], ithings.STEP_WRITE_FAILED, why)
        return None

    def _interrupted(self, p, token, clock):
        """The interrupted push to take up again (saved_offer.py), or None once reported -1."""
        settings = self.board.settings
        r = saved_offer.pending(settings, "push", p.get("token"))
        why = saved_offer.why_not(r, clock()) if r else "interrupted by a reset"
        if why is None:
            _log.warning("update to %s was interrupted by a reset; resuming it (start %d of %d)",
                         r["version"], r["starts"] + 1, saved_offer.MAX_RESUMES + 1)
            return ithings_push.Push(r["token"], r["version"], r["url"], r["size"], r["md5"],
                                     force=True, delta=bool(r.get("delta")),
                                     sha256=r.get("sha256"))
        saved_offer.forget(settings)
        _log.warning("update to %s was interrupted by a reset: %s", p["pending_version"], why)
        self.show("show_failure", "update to %s interrupted" % p["pending_version"],
                  "running %s; waiting for the next push" % self.running)
        self._finish(token, p["pending_version"], ithings.STEP_DOWNLOAD_FAILED, why)
        return None

    def _finish(self, token, version, step, desc):
        """Report the end of a push; forget the pending record once the report is delivered."""
        self.progress(token, step, desc, True, lambda: self.close(token, version, step))

    def on_reply(self, code, obj):
        """A reportInfoReply to one of our reports: with 200 the platform knows this image."""
        if code != 200:
            _log.warning("reportInfoReply code %s: %s", code, obj.get("msg") or obj.get("status"))
            return
        _log.info("reportInfoReply 200")
        self.confirmed_by_reply = True
        if self.confirm_by == "mqtt" and not self.valid_marked:
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
        self.maybe_confirmed()

    def maybe_confirmed(self):
        p = self.confirm
        if p is None or not self.confirmed_by_reply:
            return
        if self.confirm_by == "mqtt":
            if not self.valid_marked:
                return
        elif not getattr(self.ctx, "confirmed", True):
            return  # the OTA check confirms this image; report once it has
        self.confirm = None
        _log.info("update to %s confirmed", self.running)
        self.show("show_success", "updated to %s" % self.running)
        self._finish(p.get("token") or ithings.new_token(), self.running, ithings.STEP_DONE,
                     "upgraded to %s" % self.running)
