# The real ESP32-S3 board (ESP-BOX-3). The only place that touches esp32/machine/network/esp.
#
# eFuse facts, checked against ESP-IDF components/soc/esp32s3/register/soc/efuse_reg.h and
# components/efuse/esp32s3/esp_efuse_table.csv (tests/mpy/efuse_fake.py is built from the table):
#   EFUSE_RD_MAC_SPI_SYS_3 (BLOCK1 word 3, base + 0x50, efuse_reg.h line 775): WAFER_VERSION_MINOR
#     low bits [20:18] (lines 797-803; table line 200: BLK1 bit 114)
#   EFUSE_RD_MAC_SPI_SYS_5 (BLOCK1 word 5, base + 0x58, line 897): WAFER_VERSION_MINOR high bit
#     [23], MAJOR [25:24] (lines 940-953; table lines 215-216: BLK1 bits 183, 184-185)
#   EFUSE_RD_REPEAT_DATA4 (BLOCK0 word 5, base + 0x40, line 651): DISABLE_WAFER_VERSION_MAJOR [0]
#     (line 652; table line 181: BLK0 bit 160)
#   EFUSE_RD_USR_DATA0..7 (BLOCK3, base + 0x7c, line 1194): 32-byte user data = the serial number
#     (table line 237: USER_DATA, BLK3 bits 0-255)
# Secure Boot V2 and anti-rollback (ESP-IDF components/soc/esp32s3/register/soc/efuse_reg.h; the
# same positions as esp_efuse_table.csv's BLK0 bits 85-87, 88-111, 116, 142-157):
#   EFUSE_RD_REPEAT_DATA1 (0x34): SECURE_BOOT_KEY_REVOKE0..2 [21], [22], [23]
#   EFUSE_RD_REPEAT_DATA1/2 (0x34/0x38): KEY_PURPOSE_0..5 (hmac_peripheral.key_purposes)
#   EFUSE_RD_REPEAT_DATA2 (0x38): SECURE_BOOT_EN [20]
#   EFUSE_RD_REPEAT_DATA3 (0x3C): SECURE_VERSION [29:14], 16 bits
#   EFUSE_RD_KEY0_DATA0..KEY5_DATA7 (0x9C + 0x20 * n): key blocks KEY0..KEY5, 8 words each
import time

import esp
import esp32
import machine
import network

from firmware import app_image, image_scan, otadata
from firmware.board.heap import HeapWatch
from firmware.settings import NvsSettings

EFUSE_BASE = 0x60007000
EFUSE_BLOCK1 = EFUSE_BASE + 0x44
EFUSE_USR_DATA = EFUSE_BASE + 0x7C
EFUSE_RD_REPEAT_DATA1 = EFUSE_BASE + 0x34
EFUSE_RD_REPEAT_DATA2 = EFUSE_BASE + 0x38
EFUSE_RD_REPEAT_DATA3 = EFUSE_BASE + 0x3C
EFUSE_RD_KEY0 = EFUSE_BASE + 0x9C
KEY_BLOCK_STRIDE = 0x20
SECURE_BOOT_EN_BIT = 20
KEY_REVOKE0_BIT = 21
SECURE_VERSION_SHIFT = 14
SECURE_VERSION_BITS = 16
# esp_efuse_purpose_t (components/efuse/esp32s3/include/esp_efuse_chip.h): SECURE_BOOT_DIGEST0..2
PURPOSE_SECURE_BOOT_DIGEST0 = 9
SECURE_BOOT_DIGESTS = 3
EFUSE_RD_REPEAT_DATA4 = EFUSE_BASE + 0x40
NVS_NAMESPACE = "ota"


def _word(addr):
    return machine.mem32[addr] & 0xFFFFFFFF


def _read_block(addr, mem_word):
    """32 bytes of efuse from 8 read registers, little-endian words as the chip stores them."""
    out = bytearray(32)
    for i in range(8):
        w = mem_word(addr + 4 * i)
        for j in range(4):
            out[4 * i + j] = (w >> (8 * j)) & 0xFF
    return bytes(out)


def read_user_data(mem_word=_word):
    """The 32-byte efuse user-data block (BLOCK3)."""
    return _read_block(EFUSE_USR_DATA, mem_word)


def secure_boot_enabled(mem_word=_word):
    return bool((mem_word(EFUSE_RD_REPEAT_DATA2) >> SECURE_BOOT_EN_BIT) & 1)


def secure_boot_digests(mem_word=_word):
    """The Secure Boot V2 key digests the chip trusts (32 bytes each); [] with Secure Boot off.

    As ESP-IDF's esp_secure_boot_read_key_digests (components/efuse/src/efuse_controller/keys/
    with_key_purposes/esp_efuse_api_key.c): digest i (0..2) is skipped when
    SECURE_BOOT_KEY_REVOKEi is set, else it is the first key block whose purpose is
    SECURE_BOOT_DIGESTi. The digests are not read-protected (the ROM reads them at every boot)."""
    if not secure_boot_enabled(mem_word):
        return []
    from firmware.board.hmac_peripheral import key_purposes
    purposes = key_purposes(mem_word)
    revoke = mem_word(EFUSE_RD_REPEAT_DATA1)
    out = []
    for i in range(SECURE_BOOT_DIGESTS):
        if (revoke >> (KEY_REVOKE0_BIT + i)) & 1:
            continue
        want = PURPOSE_SECURE_BOOT_DIGEST0 + i
        if want in purposes:
            block = purposes.index(want)
            out.append(_read_block(EFUSE_RD_KEY0 + KEY_BLOCK_STRIDE * block, mem_word))
    return out


def efuse_secure_version(mem_word=_word):
    """efuse SECURE_VERSION: the number of its bits burned (a thermometer code, as ESP-IDF's
    esp_efuse_read_secure_version counts them with __builtin_popcount, esp_efuse_fields.c)."""
    field = (mem_word(EFUSE_RD_REPEAT_DATA3) >> SECURE_VERSION_SHIFT) & ((1 << SECURE_VERSION_BITS) - 1)
    n = 0
    while field:
        n += field & 1
        field >>= 1
    return n


def serial_from_user_data(data):
    """xiaozhi convention: a serial number is the NUL-terminated text in the block; blank = none."""
    if not data or data[0] == 0 or data[0] == 0xFF:
        return None
    end = data.find(b"\x00")
    raw = data if end < 0 else data[:end]
    try:
        return raw.decode()
    except UnicodeError:
        return None


def chip_revision(mem_word=_word):
    """major * 100 + minor, as esp_chip_info() reports."""
    w3 = mem_word(EFUSE_BLOCK1 + 12)
    w5 = mem_word(EFUSE_BLOCK1 + 20)
    minor = (((w5 >> 23) & 1) << 3) | ((w3 >> 18) & 7)
    major = (w5 >> 24) & 3
    return major * 100 + minor


def wafer_major_check_disabled(mem_word=_word):
    """efuse DISABLE_WAFER_VERSION_MAJOR: the bootloader then skips the max revision check."""
    return bool(mem_word(EFUSE_RD_REPEAT_DATA4) & 1)


def psram_size():
    """Bytes of PSRAM the heap got (MicroPython has no direct call; the SPIRAM region is the
    one heap region larger than the S3's 512 KiB of internal SRAM)."""
    try:
        regions = esp32.idf_heap_info(esp32.HEAP_DATA)
    except (AttributeError, OSError):
        return 0
    return sum(r[0] for r in regions if r[0] > 512 * 1024)


class Board(HeapWatch):
    def __init__(self, config):
        self.type = config.get("board_type") or "esp-box-3"
        self.name = config.get("board_name") or self.type
        self.Partition = esp32.Partition
        app_image.set_chip_revision(chip_revision(), wafer_major_check_disabled())
        self.settings = NvsSettings(esp32.NVS(NVS_NAMESPACE))
        self._wlan = network.WLAN(network.STA_IF)
        HeapWatch.__init__(self)
        self._display = None

    def mac(self):
        return self._wlan.config("mac")

    def serial(self):
        return serial_from_user_data(read_user_data())

    def hmac_sha256(self, msg):
        from firmware.board import hmac_peripheral
        return hmac_peripheral.hmac_sha256(msg)

    def secure_boot_digests(self):
        return secure_boot_digests()

    def efuse_secure_version(self):
        return efuse_secure_version()

    def chip_info(self):
        return {"model": 9, "cores": 2, "revision": chip_revision(), "features": 0x12}

    def flash_size(self):
        return esp.flash_size()

    def psram_size(self):
        return psram_size()

    def wifi_connect(self, cfg, timeout_ms=15000):
        wlan = self._wlan
        wlan.active(True)
        if wlan.isconnected():
            return
        if not cfg.get("ssid"):
            raise OSError("Wi-Fi: no ssid in config.json")
        wlan.connect(cfg["ssid"], cfg.get("password") or "")
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise OSError("Wi-Fi: cannot join %s (status %s)" % (cfg["ssid"], wlan.status()))
            time.sleep_ms(200)

    def wifi(self):
        w = self._wlan
        up = w.isconnected()
        return {"ssid": w.config("ssid") if up else "", "rssi": w.status("rssi") if up else 0,
                "channel": w.config("channel") if up else 0, "ip": w.ifconfig()[0] if up else ""}

    def set_time(self, utc_ms):
        secs = utc_ms // 1000 - (946684800 if time.gmtime(0)[0] == 2000 else 0)
        tm = time.gmtime(secs)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], (utc_ms % 1000) * 1000))

    def time_ms(self):
        # Older MicroPython ports count time() from 2000-01-01; convert to the Unix epoch.
        epoch_2000 = time.gmtime(0)[0] == 2000
        return (time.time() + (946684800 if epoch_2000 else 0)) * 1000

    def app_desc(self):
        return image_scan.read_app_desc(self.Partition(self.Partition.RUNNING))

    def ota_state(self):
        """otadata state of the running image ("pending-verify" until confirmed), read through
        esp32.Partition; "none" when otadata did not select it, "unknown" when unreadable."""
        P = self.Partition
        try:
            od = P.find(P.TYPE_DATA, subtype=0)  # ESP_PARTITION_SUBTYPE_DATA_OTA
            slots = sorted((p.info() for p in P.find(P.TYPE_APP) if 0x10 <= p.info()[1] < 0x20),
                           key=lambda i: i[1])
            running = P(P.RUNNING).info()
            if not od or running not in slots:
                return "none"
            table = otadata.OtaData(otadata.PartitionReader(od[0]), 0)
            return table.running_state(len(slots), slots.index(running))
        except OSError:
            return "unknown"

    def display(self):
        if self._display is None:
            from firmware.display.esp_box_3_lcd import make_lcd
            self._display = make_lcd()
        return self._display

    def screenshot_dir(self):
        return None

    def watchdog(self, timeout_ms):
        """The task watchdog (ports/esp32/machine_wdt.c): WDT(0, timeout_ms) reconfigures the one
        watchdog on a second call, cannot be stopped, and panics -> resets the chip when not fed."""
        return machine.WDT(0, timeout_ms)

    def reboot(self):
        machine.reset()
