# The device's life, start to finish. Protocol details live in their own modules.
import json

from firmware import board as board_mod
from firmware import config as config_mod
from firmware import log, sysinfo

_log = log.get("app")


def main():
    config = config_mod.load()
    log.set_level(config.get("log_level", "info"))
    board = board_mod.load(config)
    request = sysinfo.ota_request(board, config)
    print(json.dumps(request))
