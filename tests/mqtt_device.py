# Test driver (MicroPython, run from a device root): boot the simulated board and run the
# app's LISTEN state -- mqtt_ota.listen(ctx) -- for argv[1] ms (default: the config's).
# Display calls become "I display: ..." log lines the tests can read.
import sys

from firmware import board as board_mod
from firmware import config as config_mod
from firmware import log, mqtt_ota

_log = log.get("display")


class Display:
    def show_updating(self, percent, rate_kib_s, from_v, to_v):
        _log.info("updating %s -> %s %d%% %d KiB/s", from_v, to_v, percent, int(rate_kib_s or 0))

    def show_success(self, text):
        _log.info("success: %s", text)

    def show_failure(self, reason, next_action):
        _log.info("failure: %s -- %s", reason, next_action)

    def show_idle(self, version):
        _log.info("idle %s", version)


class Ctx:
    pass


def main():
    config = config_mod.load()
    log.set_level(config.get("log_level", "info"))
    ctx = Ctx()
    ctx.config = config
    ctx.board = board_mod.load(config)
    ctx.display = Display()
    ctx.running_version = ctx.board.app_desc().version
    ctx.mqtt_settings = ctx.board.settings.get("mqtt")
    print("I device: boot %s state %s" % (ctx.running_version, ctx.board.ota_state()))
    duration = int(sys.argv[1]) if len(sys.argv) > 1 else None
    try:
        print("I device: listen -> %s" % mqtt_ota.listen(ctx, duration))
    except KeyboardInterrupt:  # the test is done with this boot (SIGINT)
        print("I device: interrupted")


main()
