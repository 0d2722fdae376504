# The simulated ESP-BOX-3 for the MicroPython unix port.
#
# Everything that cannot exist here is modelled from one file, sim.json, in the device root:
#   {"flash": "flash.bin", "mac": "D4:06:06:B6:A9:FB", "serial": null, "hmac_key": "<hex>",
#    "chip_revision": 2, "psram_size": 16777216, "wifi": {"ssid": ..., "rssi": ..., ...},
#    "screenshots": "screens", "secure_boot_digests": ["<64 hex>", ...], "efuse_secure_version": 0,
#    "rollback": true}
# secure_boot_digests stands for the efuse SECURE_BOOT_DIGEST0..2 blocks of a chip with Secure
# Boot V2 enabled (absent or empty: Secure Boot off).
# ("rollback": false simulates a build without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE.)
# Creating the Board is a power-on: the simulated bootloader picks the app slot from otadata.
import json
import sys
import time

from firmware import app_image, hmac_sha256, image_scan, log
from firmware.board import sim_partition
from firmware.board.heap import HeapWatch
from firmware.board.nor_flash import NorFlash
from firmware.settings import JsonFileSettings

SIM_CONFIG = "sim.json"
REBOOT_EXIT_CODE = 3
_log = log.get("sim")


class Board(HeapWatch):
    def __init__(self, config, sim_path=SIM_CONFIG):
        try:
            with open(sim_path) as f:
                self.sim = json.load(f)
        except OSError:
            raise OSError("simulated board: %s not found (make a device root with tools/mkflash.py)" % sim_path)
        self.type = config.get("board_type") or "esp-box-3"
        self.name = config.get("board_name") or self.type
        self.flash = NorFlash(self.sim.get("flash", "flash.bin"))
        self.chip = sim_partition.Chip(self.flash, self.sim.get("rollback", True))
        app_image.set_chip_revision(self.chip_info()["revision"])  # the bootloader checks it too
        sim_partition.install(self.chip)
        sim_partition.run_bootloader(self.chip, _log.warning)
        self.Partition = sim_partition.Partition
        self.settings = JsonFileSettings(self.sim.get("settings", "settings.json"))
        self._clock_offset_ms = 0
        HeapWatch.__init__(self)
        self._display = None
        self._wifi_up = False

    # --- identity and efuse
    def mac(self):
        import binascii
        return binascii.unhexlify(self.sim.get("mac", "D4:06:06:B6:A9:FB").replace(":", ""))

    def serial(self):
        s = self.sim.get("serial")
        return s if s else None

    def hmac_sha256(self, msg):
        # The HMAC peripheral in upstream mode computes plain HMAC-SHA256 (RFC 2104) with an
        # efuse key (ESP32-S3 TRM, chapter "HMAC Accelerator"; ESP-IDF esp_hmac_calculate);
        # the key here stands for that efuse block, which software can never read on a chip.
        key = self.sim.get("hmac_key")
        if not key:
            raise OSError("no HMAC key in efuse")
        import binascii
        return hmac_sha256.hmac_sha256(binascii.unhexlify(key), msg)

    def secure_boot_digests(self):
        from firmware.secure_boot import parse_digest
        return [parse_digest(d) for d in self.sim.get("secure_boot_digests") or []]

    def efuse_secure_version(self):
        return int(self.sim.get("efuse_secure_version") or 0)

    def chip_info(self):
        # ESP-IDF components/esp_hw_support/include/esp_chip_info.h: CHIP_ESP32S3 = 9 (line 25),
        # CHIP_FEATURE_WIFI_BGN BIT(1) and CHIP_FEATURE_BLE BIT(4) (lines 41-42); two cores.
        return {"model": 9, "cores": 2, "revision": self.sim.get("chip_revision", 2),
                "features": 0x12}

    # --- memory and flash
    def flash_size(self):
        return self.flash.size

    def psram_size(self):
        # ESP-BOX-3: ESP32-S3-WROOM-1 with 16 MB flash and 16 MB octal PSRAM (Espressif's
        # esp-box hardware overview); the flash size is the flash image's own.
        return self.sim.get("psram_size", 16 * 1024 * 1024)

    # --- network
    def wifi_connect(self, cfg):
        w = self.sim.get("wifi", {})
        if w.get("fail"):
            raise OSError("Wi-Fi: cannot join %s" % (cfg.get("ssid") or w.get("ssid")))
        self._wifi_up = True

    def wifi(self):
        w = self.sim.get("wifi", {})
        return {"ssid": w.get("ssid", "SimWiFi"), "rssi": w.get("rssi", -45),
                "channel": w.get("channel", 6), "ip": w.get("ip", "127.0.0.1")}

    # --- clock
    def set_time(self, utc_ms):
        # The unix port cannot set the host clock; keep an offset, as the RTC would hold it.
        self._clock_offset_ms = int(utc_ms) - int(time.time() * 1000)

    def time_ms(self):
        return int(time.time() * 1000) + self._clock_offset_ms

    # --- running image
    def app_desc(self):
        return image_scan.read_app_desc(self.Partition(self.Partition.RUNNING))

    def ota_state(self):
        return sim_partition.ota_state_of_running()

    def display(self):
        """The LCD driver, wired to the simulated panel (which can save PNG screenshots)."""
        if self._display is None:
            from firmware.display import sim_panel
            self._display = sim_panel.make_lcd()
        return self._display

    def screenshot_dir(self):
        return self.sim.get("screenshots")

    def watchdog(self, timeout_ms):
        """machine.WDT(0, timeout_ms) of the simulated chip; not fed in time, it resets the board
        through reboot() (firmware/board/sim_watchdog.py)."""
        from firmware.board import sim_watchdog
        return sim_watchdog.make(timeout_ms, self.reboot)

    def reboot(self):
        _log.info("reboot")
        sys.exit(REBOOT_EXIT_CODE)
