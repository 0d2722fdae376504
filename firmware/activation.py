# Device activation (xiaozhi protocol): show the 6-digit code until the server is satisfied.
#
# v1: keep showing activation.message / code and re-check every `recheck_s` until an answer
#     comes without `activation`. A re-check may carry a new code (the old one expired): the new
#     one is shown.
# v2 (the board has an efuse serial and the server sent a challenge): also prove the device's
#     key -- POST {ota_url}activate {"algorithm": "hmac-sha256", "serial_number", "challenge",
#     "hmac": hex(HMAC-SHA256(efuse key, challenge))}. 202 = the code was not entered yet (poll
#     every `poll_s`), 200 = activated. An unknown/expired challenge fetches a fresh one with a
#     re-check; other errors back off like the check itself.
#
# Config (config.json "activation", optional): {"recheck_s": 15, "poll_s": 3}.
import binascii

from firmware import config as config_mod
from firmware import log, ota_check, retry

_log = log.get("activation")

DEFAULT_RECHECK_S = 15
DEFAULT_POLL_S = 3


def activate_url(ota_url):
    return ota_url + ("activate" if ota_url.endswith("/") else "/activate")


def hmac_hex(board, challenge):
    return binascii.hexlify(board.hmac_sha256(challenge.encode())).decode()


def post_proof(config, headers, serial, challenge, mac_hex, http=None):
    """One v2 activation POST; returns 200 or 202, raises ota_check.CheckError otherwise."""
    http = http or ota_check._http_client
    body = {"algorithm": "hmac-sha256", "serial_number": serial, "challenge": challenge,
            "hmac": mac_hex}
    url = activate_url(ota_check.ota_url(config))
    _log.info("POST %s (serial %s)", url, serial)
    status, data, raw = ota_check.post_json(http, url, headers, body, config)
    if status in (200, 202):
        return status
    raise ota_check.CheckError("activation HTTP %d: %s" % (status, ota_check.error_text(data, raw)),
                               status)


class Activation:
    """Runs until activated. `recheck()` is the app's OTA check with retry (may raise Exhausted);
    it must leave the screen alone on success so the code stays visible."""

    def __init__(self, board, config, display, recheck, http=None, sleep=retry.sleep_s):
        cfg = config.get("activation") or {}
        self.board = board
        self.config = config
        self.display = display
        self.recheck = recheck
        self.http = http
        self.sleep = sleep
        self.recheck_s = config_mod.number(cfg, "recheck_s", DEFAULT_RECHECK_S)
        self.poll_s = config_mod.number(cfg, "poll_s", DEFAULT_POLL_S)
        self.backoff = retry.Backoff.from_config(config)
        self.serial = board.serial()
        self.v2 = bool(self.serial)
        self.shown = None
        self.accepted = False  # the server answered 200 to our proof

    def _show(self, act):
        # Logged once per code; put on the screen every round, since a failed re-check in
        # between shows its reason there (the display drops repeats of the same screen).
        if act["code"] != self.shown:
            if self.shown is not None:
                _log.info("new activation code (the old one expired)")
            self.shown = act["code"]
            _log.info("ACTIVATION CODE %s -- %s", act["code"], act["message"].replace("\n", " | "))
        self.display.show_activation(act["code"], act["message"])

    def _prove(self, result):
        """v2 step: 'done', 'pending', 'renew' (needs a fresh challenge) or 'retry' (backing off)."""
        act = result.activation
        try:
            mac = hmac_hex(self.board, act["challenge"])
        except OSError as e:  # no HMAC key / peripheral error: v2 is impossible on this board
            _log.error("cannot compute the activation HMAC (%s); waiting for the code only", e)
            self.v2 = False
            return "retry"
        try:
            status = post_proof(self.config, result.headers, self.serial, act["challenge"], mac,
                                self.http)
        except ota_check.CheckError as e:
            if e.status == 400:
                _log.warning("activation refused: %s; fetching a new challenge", e.reason)
                return "renew"
            delay = self.backoff.fail()
            if delay is None:
                raise retry.Exhausted("activation", self.backoff.failures, e.reason)
            _log.warning("activation failed (%d/%d): %s; retry in %.1f s", self.backoff.failures,
                         self.backoff.tries, e.reason, delay)
            self.display.show_failure(e.reason, "activation retry in %d s" % int(delay + 0.5))
            self.sleep(delay)
            return "retry"
        self.backoff.reset()
        if status == 200:
            _log.info("activation accepted (v2, HMAC verified)")
            return "done"
        _log.info("activation pending: enter code %s", act["code"])
        return "pending"

    def run(self, result):
        """Returns the first check Result without `activation`."""
        while result.activation is not None:
            act = result.activation
            self._show(act)
            if self.v2 and act.get("challenge"):
                if self.accepted:  # proof accepted, yet the server still asks: do not spin
                    self.sleep(self.poll_s)
                step = self._prove(result)
                if step == "done":
                    self.accepted = True
                if step == "pending":
                    self.sleep(self.poll_s)
                    continue
                if step == "retry":
                    continue
                if step == "renew":
                    self.sleep(self.poll_s)
                # done or renew: ask the server again (done: it should stop sending activation)
            else:
                self.sleep(self.recheck_s)
            result = self.recheck()
        if self.shown is not None:
            _log.info("device activated")
            self.display.show_success("Activated")
        return result


def run(board, config, display, result, recheck, http=None, sleep=retry.sleep_s):
    return Activation(board, config, display, recheck, http, sleep).run(result)
