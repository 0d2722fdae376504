# The device's life as an explicit state machine. Protocol details live in their own modules:
# ota_check (the xiaozhi check), activation, offer_install (an offer -> the update engine),
# mqtt_ota (pushes), boot_review (what a boot reports).
#
#   boot -> wifi -> check -> confirm -> update | activate | listen
#   activate -> (activated) -> update | listen          update -> reboot (or listen on failure)
#   listen -> check (MQTT asks, or the re-check timer)  any exhausted retry -> offline -> wifi
#
# The running image is confirmed right after the first successful check, before any update:
# ESP-IDF refuses to start an OTA while the running image is still pending verification, and an
# image that never reaches its server must roll back. Nothing here crashes: retries back off,
# unexpected errors are logged and the machine restarts from "wifi" after a backoff delay.
#
# Config knobs (config.json, all optional): retry {...} (see retry.py), activation {...} (see
# activation.py), recheck_interval_s (3600: idle re-check without MQTT), offline_s (1800: wait
# after giving up), fatal_reset_s (10: delay before the chip reset that follows a start-up error),
# http_timeout_ms, http_deadline_s (30: a whole check request), watchdog_s (120: see watchdog.py),
# confirm_timeout_s (300: see confirm_deadline.py),
# rollback_retries (3: see install_record.py), confirm_by ("ota_check" | "mqtt"), run_until (a
# state name: main() returns on entering it; tests and tools) -- also the environment variable
# FW_RUN_UNTIL.
import json
import os
import sys

from firmware import activation, boot_review, confirm_deadline, install_record, log
from firmware import mqtt_config, ota_check, retry, status, sysinfo, tls_config
from firmware import watchdog
from firmware import config as config_mod

_log = log.get("app")

BOOT = "boot"
WIFI = "wifi"
CHECK = "check"
CONFIRM = "confirm"
ACTIVATE = "activate"
UPDATE = "update"
LISTEN = "listen"
OFFLINE = "offline"
STOPPED = "stopped"
STATES = (BOOT, WIFI, CHECK, CONFIRM, ACTIVATE, UPDATE, LISTEN, OFFLINE, STOPPED)

DEFAULT_RECHECK_S = 3600
DEFAULT_OFFLINE_S = 1800
DEFAULT_FATAL_RESET_S = 10


def _run_until(config):
    v = None
    getenv = getattr(os, "getenv", None)  # the unix port has it, the ESP32 port does not
    if getenv:
        v = getenv("FW_RUN_UNTIL")
    return v or config.get("run_until")


def _print_exception(e):
    pe = getattr(sys, "print_exception", None)
    if pe:
        pe(e)


class App:
    """Also the context handed to mqtt_ota.listen(ctx): board, config, display, running_version,
    confirmed, confirm_image(why), tls(), http, install(offer)."""

    def __init__(self, config, board, display, http=None, sleep=retry.sleep_s):
        self.config = config
        self.board = board
        self.display = display
        self.http = http or ota_check._http_client
        self.sleep = sleep
        self.state = BOOT
        self.result = None            # the latest successful check
        self.confirmed = False
        self.resume = WIFI            # where "offline" goes back to
        self.reason = None            # why we are offline
        self.backoff = retry.Backoff.from_config(config)
        self.crash_backoff = retry.Backoff.from_config(config)
        self.until = _run_until(config)
        self.running_version = sysinfo.application(board)["version"]
        self.mqtt_off = None          # why upgrade pushes are off (logged once per change)

    # ---- the machine ---------------------------------------------------------------------------

    def run(self):
        while True:
            watchdog.feed()  # the one feed of the loop; long states feed through their sleeps
            st = self.state
            _log.debug("state %s", st)
            if st == STOPPED:
                return st
            if st == self.until:
                _log.info("run_until: stopping on entering state %s", st)
                watchdog.stop()
                return st
            try:
                nxt = getattr(self, "_s_" + st)()
                if st in (ACTIVATE, LISTEN):  # steady state reached: earlier errors are history
                    self.crash_backoff.reset()
            except retry.Exhausted as e:
                self.reason = e.reason
                self.resume = WIFI if st == WIFI else CHECK
                nxt = OFFLINE
            except Exception as e:  # a bug or an unplanned failure: log it, back off, start over
                _log.error("unexpected error in state %s: %r", st, e)
                _print_exception(e)
                self.display.show_failure("internal error: %r" % e, "restarting the check")
                delay = self.crash_backoff.fail()
                if delay is None:
                    self.reason = "internal error: %r" % e
                    self.crash_backoff.reset()
                    nxt = OFFLINE
                else:
                    self.sleep(delay)
                    nxt = WIFI
            self.state = nxt

    def _s_boot(self):
        b = self.board
        boot_review.review(b, self.config, self.running_version)
        wifi = self.config.get("wifi") or {}
        self.display.show_booting(wifi.get("ssid") or "", self.config.get("ota_url") or "")
        if self._configured():  # an unconfigured device stops at the REPL: no watchdog there
            watchdog.start(b, self.config)
            confirm_deadline.arm(b, self.config, self.running_version)
        return WIFI

    def _configured(self):
        try:
            ota_check.ota_url(self.config)
            return True
        except ota_check.CheckError:
            return self._mqtt_listener() is not None

    def _s_wifi(self):
        cfg = self.config.get("wifi") or {}
        retry.call(lambda: self.board.wifi_connect(cfg), "Wi-Fi", self.backoff, OSError, self.display)
        w = self.board.wifi()
        _log.info("Wi-Fi up: %s, %s dBm, ip %s", w.get("ssid"), w.get("rssi"), w.get("ip"))
        return CHECK

    def check_once(self):
        return ota_check.check(self.board, self.config, self.http)

    def check_with_retry(self, show=True):
        if show:
            self.display.show_checking()
        return retry.call(self.check_once, "OTA check", self.backoff, ota_check.CheckError,
                          self.display)

    def recheck_quietly(self):
        """A re-check while the activation code is on screen: failures show, success does not."""
        return self.check_with_retry(show=False)

    def _s_check(self):
        # Talking to its server is this image's health check: a rollback from here on is its
        # own fault, not a power cut during its first boot (install_record.again retries that).
        install_record.note_health_check(self.board, self.running_version)
        try:
            ota_check.ota_url(self.config)
        except ota_check.CheckError as e:
            if self._mqtt_listener() is None:
                return self._unconfigured(e.reason)
            return self._mqtt_only(e.reason)
        self.result = self.check_with_retry()
        return CONFIRM if not self.confirmed else self._after_check()

    def _mqtt_only(self, reason):
        # A fleet on an iThings platform alone: no OTA server to check with, so the platform's
        # answer to the version report is what confirms a new image.
        if self.config.get("confirm_by", "ota_check") != "mqtt":
            _log.info("%s: MQTT only; images are confirmed by the platform's reportInfoReply", reason)
            self.config["confirm_by"] = "mqtt"
        return LISTEN

    def _unconfigured(self, reason):
        # Nothing to talk to: say so, print what the check would send, and stop.
        _log.error("%s: set it and restart; the check would send:", reason)
        self.display.show_failure(reason, "edit config.json")
        print(json.dumps(sysinfo.ota_request(self.board, self.config)))
        return STOPPED

    def _after_check(self):
        r = self.result
        if r.offer is not None:
            return UPDATE
        if r.activation is not None:
            return ACTIVATE
        return LISTEN

    def _s_confirm(self):
        if self.config.get("confirm_by", "ota_check") == "ota_check":
            self.confirm_image("first successful OTA check")
        else:
            _log.info("image confirmation left to %s", self.config.get("confirm_by"))
        return self._after_check()

    def _s_activate(self):
        self.result = activation.run(self.board, self.config, self.display, self.result,
                                     self.recheck_quietly, self.http, self.sleep)
        return self._after_check()

    def _s_update(self):
        offer = self.result.offer
        self.result.offer = None  # one attempt per check
        self.install(offer)       # reboots on success
        return ACTIVATE if self.result.activation is not None else LISTEN

    def _s_listen(self):
        self.display.show_idle(self.running_version)
        listen = self._mqtt_listener()
        if listen is not None:
            if listen(self) == "reboot":  # else it listened (or idled) for the whole interval
                self.board.reboot()
            return CHECK
        delay = retry.jittered(config_mod.number(self.config, "recheck_interval_s", DEFAULT_RECHECK_S))
        _log.info("idle; next OTA check in %d s", int(delay))
        self.sleep(delay)
        return CHECK

    def _s_offline(self):
        # The OTA server is out of reach but the broker may not be: keep listening for pushes
        # (and, with confirm_by "mqtt", for the reply that confirms a new image) meanwhile.
        mqtt_up = self.resume == CHECK and self._mqtt_listener() is not None
        confirms_by_mqtt = mqtt_up and self.config.get("confirm_by") == "mqtt"
        if not self.confirmed and not confirms_by_mqtt and self.board.ota_state() == "pending-verify":
            # A new image that cannot reach its server must not stay: reset, and the bootloader
            # rolls back to the image that worked.
            _log.error("offline: %s; new image never confirmed, rebooting to roll back", self.reason)
            self.display.show_failure(self.reason or "offline", "rolling back to the previous firmware")
            self.board.reboot()
            return STOPPED
        if mqtt_up:
            _log.warning("OTA check unavailable (%s); listening on MQTT until the next check", self.reason)
            return LISTEN
        delay = retry.jittered(config_mod.number(self.config, "offline_s", DEFAULT_OFFLINE_S))
        _log.error("offline: %s; trying again in %d s", self.reason, int(delay))
        self.display.show_failure(self.reason or "offline", "next try in %d min" % int(delay / 60 + 0.5))
        self.sleep(delay)
        return self.resume

    # ---- services for the states and for mqtt_ota -------------------------------------------

    def tls(self):
        return tls_config.options(self.config)

    def confirm_image(self, why):
        """Mark the running image valid (cancel rollback); True when it is (now) confirmed."""
        if self.confirmed:
            return True
        try:
            self.board.Partition.mark_app_valid_cancel_rollback()
        except OSError as e:
            _log.error("could not confirm the running image: %s", e)
            return False
        self.confirmed = True
        _log.info("image confirmed (%s): firmware %s, state %s", why, self.running_version,
                  self.board.ota_state())
        return True

    def install(self, offer):
        """Download and install an offer dict (ota_check's Result.offer); reboot on success.
        Returns only on failure (logged and shown)."""
        try:  # loaded when an offer comes, as the update engine is: its bytecode costs heap
            from firmware import offer_install
        except MemoryError:
            _log.error("update to %s failed: out of memory loading the update engine",
                       offer.get("version") or "?")
            self.display.show_failure("update failed: out of memory",
                                      "keeping %s" % self.running_version)
            return False
        return offer_install.install(self.board, self.display, self.config, offer,
                                     self.running_version, self.tls())

    def _mqtt_listener(self):
        """mqtt_ota.listen when upgrade pushes can run (mqtt_config's broker rule), else None.
        off_reason covers every setting mqtt_ota.Settings refuses, so listen() never idles
        unfed on settings it cannot use."""
        why = mqtt_config.off_reason(self.config.get("mqtt") or {},
                                     self.board.settings.get(ota_check.K_MQTT), self.board.mac())
        if why != self.mqtt_off:  # re-checks ask every interval: say it once per change
            self.mqtt_off = why
            if why:
                _log.info("MQTT upgrade pushes off: %s", why)
        if why:
            return None
        try:
            from firmware import mqtt_ota
        except ImportError:
            return None
        return getattr(mqtt_ota, "listen", None)


def main():
    from firmware import board as board_mod
    try:
        config = config_mod.load()
    except ValueError as e:  # a broken config.json must not brick the device: run unconfigured
        print("E app: %s" % e)
        config = config_mod._merge(config_mod.DEFAULTS, {})
    log.set_level(config.get("log_level", "info"))
    try:
        board = board_mod.load(config)
        display = status.open(board, config)
        app = App(config, board, display)
    except Exception as e:  # App.run() contains its own errors; this covers start-up
        delay = config_mod.number(config, "fatal_reset_s", DEFAULT_FATAL_RESET_S)
        _log.error("fatal start-up error: %r; resetting in %d s", e, int(delay))
        _print_exception(e)
        retry.sleep_s(delay)
        board_mod.reset()
        return STOPPED
    try:
        return app.run()
    except KeyboardInterrupt:
        if not watchdog.bitten():
            raise
        board.reboot()  # the simulated watchdog fired: reset like the chip would
        return STOPPED
