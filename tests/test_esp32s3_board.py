"""The real-board implementation, run on the unix port with register-level fakes of
machine/esp32/network/esp installed in sys.modules (the hardware cannot exist here)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, mpy_json

FAKE_DIR = os.path.join(ROOT, "tests", "mpy")

FAKES = """
import sys, json
EFUSE = {}
class _Mem32:
    def __getitem__(self, addr):
        return EFUSE.get(addr, 0)
class _Machine:
    mem32 = _Mem32()
    class RTC:
        set_to = None
        def datetime(self, t):
            _Machine.RTC.set_to = t
    @staticmethod
    def reset():
        raise SystemExit('reset')
    class _Wdt:
        # ports/esp32/machine_wdt.c: one watchdog (wdt_default); feed() is esp_task_wdt_reset_user
        timeout = None
        feeds = 0
        def feed(self):
            _Machine._Wdt.feeds += 1
    _wdt = _Wdt()
    @staticmethod
    def WDT(id=0, timeout=5000):
        # machine_wdt.c lines 42-69: id must be 0, timeout <= 0 refused, later calls reconfigure
        # the same watchdog (esp_task_wdt_reconfigure) and return it
        if id != 0:
            raise ValueError()
        if timeout <= 0:
            raise ValueError('WDT timeout too short')
        _Machine._Wdt.timeout = timeout
        return _Machine._wdt
class _Esp:
    @staticmethod
    def flash_size():
        return 16 * 1024 * 1024
class _Part:
    BOOT = 0; RUNNING = 1; TYPE_APP = 0; TYPE_DATA = 1
class _Nvs:
    # ESP-IDF NVS: keys of at most 15 characters (ESP_ERR_NVS_KEY_TOO_LONG = 0x1109 otherwise)
    store = {}
    def __init__(self, ns): pass
    @staticmethod
    def _k(k):
        if len(k) > 15: raise OSError(-0x1109)
        return k
    def get_blob(self, k, buf):
        if self._k(k) not in _Nvs.store: raise OSError(-4354)
        v = _Nvs.store[k]
        if len(v) > len(buf): raise OSError(-0x110C)  # ESP_ERR_NVS_INVALID_LENGTH
        buf[:len(v)] = v; return len(v)
    def set_blob(self, k, v): _Nvs.store[self._k(k)] = bytes(v, 'utf-8') if isinstance(v, str) else bytes(v)
    def commit(self): pass
    def erase_key(self, k):
        if self._k(k) not in _Nvs.store: raise OSError(-4354)
        del _Nvs.store[k]
class _Esp32:
    Partition = _Part
    NVS = _Nvs
    HEAP_DATA = 4
    @staticmethod
    def idf_heap_info(cap):
        return [(240000, 1000, 1000, 1000), (16 * 1024 * 1024 - 8192, 1, 1, 1), (30000, 1, 1, 1)]
class _WLAN:
    def __init__(self, i): pass
    def config(self, k):
        return {'mac': b'\\xd4\\x06\\x06\\xb6\\xa9\\xfb', 'ssid': 'Lab', 'channel': 11}[k]
    def isconnected(self): return True
    def status(self, k=None): return -61 if k == 'rssi' else 1010
    def ifconfig(self): return ('10.0.0.7', '255.255.255.0', '10.0.0.1', '10.0.0.1')
    def active(self, v=None): return True
class _Network:
    STA_IF = 0
    WLAN = _WLAN
sys.modules['machine'] = _Machine
sys.modules['esp'] = _Esp
sys.modules['esp32'] = _Esp32
sys.modules['network'] = _Network
from firmware.board import esp32s3
"""


def test_serial_from_efuse_user_data_block():
    r = mpy_json(FAKES + """
out = {}
out['blank'] = esp32s3.serial_from_user_data(esp32s3.read_user_data())
sn = b'SN-BOX3-0042'
words = sn + bytes(32 - len(sn))
for i in range(8):
    EFUSE[0x6000707C + 4 * i] = int.from_bytes(words[4 * i:4 * i + 4], 'little')
out['serial'] = esp32s3.serial_from_user_data(esp32s3.read_user_data())
b = esp32s3.Board({})
out['board_serial'] = b.serial()
print(json.dumps(out))
""")
    assert r == {"blank": None, "serial": "SN-BOX3-0042", "board_serial": "SN-BOX3-0042"}


def test_chip_revision_from_wafer_version_bits():
    r = mpy_json(FAKES + """
EFUSE[0x60007044 + 12] = (2 << 18)                 # minor low bits = 2
EFUSE[0x60007044 + 20] = (0 << 23) | (0 << 24)     # v0.2
a = esp32s3.chip_revision()
EFUSE[0x60007044 + 12] = (1 << 18)
EFUSE[0x60007044 + 20] = (1 << 23) | (1 << 24)     # minor = 8 + 1, major 1 -> v1.9
print(json.dumps([a, esp32s3.chip_revision()]))
""")
    assert r == [2, 109]


def test_board_reads_wifi_flash_psram_and_settings():
    r = mpy_json(FAKES + """
b = esp32s3.Board({'board_type': 'esp-box-3'})
out = {'mac': list(b.mac()), 'wifi': b.wifi(), 'flash': b.flash_size(), 'psram': b.psram_size()}
out['changed'] = [b.settings.set('uuid', 'x'), b.settings.set('uuid', 'x')]
out['uuid'] = b.settings.get('uuid')
b.set_time(1752119934489)
out['rtc'] = list(_Machine.RTC.set_to)
print(json.dumps(out))
""")
    assert r["mac"] == [0xD4, 0x06, 0x06, 0xB6, 0xA9, 0xFB]
    assert r["wifi"] == {"ssid": "Lab", "rssi": -61, "channel": 11, "ip": "10.0.0.7"}
    assert r["flash"] == 16 * 1024 * 1024
    assert r["psram"] == 16 * 1024 * 1024 - 8192
    assert r["changed"] == [True, False] and r["uuid"] == "x"
    # 1752119934.489 s = 2025-07-10 03:58:54.489 UTC (weekday 3 = Thursday)
    assert r["rtc"] == [2025, 7, 10, 3, 3, 58, 54, 489000]


def test_nvs_settings_take_every_key_the_firmware_uses():
    # NVS keys are limited to 15 characters; the firmware's own keys are longer ones too.
    r = mpy_json(FAKES + """
from firmware import ota_check, updater, ithings_pending
b = esp32s3.Board({})
out = {}
for k in (ota_check.K_LAST_INSTALL, updater.RESUME_KEY, ithings_pending.K_PENDING,
          ithings_pending.K_LAST, ota_check.K_MQTT, 'uuid'):
    v = {'key': k}
    out[k] = [b.settings.set(k, v), b.settings.set(k, v), b.settings.get(k) == v,
              b.settings.delete(k), b.settings.get(k)]
out['stored'] = sorted(_Nvs.store)
b.settings.set(ithings_pending.K_PENDING, 1)
b.settings.set(ota_check.K_LAST_INSTALL, 2)
out['distinct'] = len(_Nvs.store)
print(json.dumps(out))
""")
    for k in ("ota_last_install", "ota_resume", "mqtt_ota_pending", "mqtt_ota_last", "mqtt", "uuid"):
        assert r[k] == [True, False, True, True, None], k
    assert r["stored"] == [] and r["distinct"] == 2


def test_nvs_settings_read_blobs_larger_than_the_first_buffer():
    # A resume record carries the download URL; pre-signed ones run past 1 KiB.
    r = mpy_json(FAKES + """
from firmware import updater
b = esp32s3.Board({})
rec = {'url': 'https://oss.example/f.bin?X-Amz-Signature=' + 'a' * 1500, 'written': 65536}
out = [b.settings.set(updater.RESUME_KEY, rec), b.settings.get(updater.RESUME_KEY) == rec,
       b.settings.set(updater.RESUME_KEY, rec), b.settings.writes]
print(json.dumps(out))
""")
    assert r == [True, True, False, 1]


def _otadata_sector(seq, state):
    import binascii
    import struct
    crc = binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF
    return struct.pack("<I20sII", seq, b"\xff" * 20, state, crc) + b"\xff" * (4096 - 32)


def test_ota_state_reads_otadata_through_the_partition_api():
    # ota_1 selected by seq 2 and booted once: pending-verify until the app confirms it.
    otadata = _otadata_sector(2, 1) + b"\xff" * 4096
    r = mpy_json(FAKES + """
OTADATA = bytes(%r)
class FakePartition:
    BOOT = 0; RUNNING = 1; TYPE_APP = 0; TYPE_DATA = 1
    TABLE = [(1, 0, 0xd000, 0x2000, 'otadata', False), (0, 0x10, 0x10000, 0x300000, 'ota_0', False),
             (0, 0x11, 0x310000, 0x300000, 'ota_1', False)]
    running = 'ota_1'
    def __init__(self, id, block_size=4096):
        label = FakePartition.running if id == 1 else id
        self._info = [r for r in FakePartition.TABLE if r[4] == label][0]
    @classmethod
    def find(cls, type=0, subtype=0xff, label=None):
        return [cls(r[4]) for r in cls.TABLE if r[0] == type and subtype in (0xff, r[1])]
    def info(self):
        return self._info
    def readblocks(self, block, buf, offset=0):
        assert self._info[4] == 'otadata'
        start = block * 4096 + offset
        buf[:] = OTADATA[start:start + len(buf)]
_Esp32.Partition = FakePartition
b = esp32s3.Board({})
out = [b.ota_state()]
FakePartition.running = 'ota_0'
out.append(b.ota_state())
print(json.dumps(out))
""" % otadata)
    assert r == ["pending-verify", "none"]


def _espefuse(efuse_file, *args):
    proc = subprocess.run([sys.executable, "-m", "espefuse", "--chip", "esp32s3", "--virt",
                           "--path-efuse-file", str(efuse_file), "--do-not-confirm"]
                          + [str(a) for a in args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _efuse_registers(efuse_file):
    """Every eFuse read register of espefuse's own ESP32-S3 emulator (a model we did not write:
    it places each field where espefuse reads it from a real chip)."""
    from espefuse.efuse.esp32s3.emulate_efuse_controller import EmulateEfuseController
    chip = EmulateEfuseController(str(efuse_file))
    base = chip.REGS.DR_REG_EFUSE_BASE
    regs = {}
    for addr in range(base, base + chip.REGS.EFUSE_MEM_SIZE, 4):
        v = chip.read_reg(addr)
        if v:
            regs[addr] = v
    return regs


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # espefuse's own import of click
def test_secure_boot_digests_and_secure_version_from_efuse(tmp_path):
    """Key digests burned by espefuse (virtual chip) read back through machine.mem32: only with
    SECURE_BOOT_EN, in digest order, revoked ones left out; SECURE_VERSION counts burned bits."""
    from test_secure_boot import Key
    a, b = Key(tmp_path, "A"), Key(tmp_path, "B")
    efuse = tmp_path / "efuse.bin"
    (tmp_path / "hmac.bin").write_bytes(bytes(range(32)))
    _espefuse(efuse, "burn-key", "BLOCK_KEY0", tmp_path / "hmac.bin", "HMAC_UP")
    _espefuse(efuse, "burn-key-digest", "BLOCK_KEY2", b.pub, "SECURE_BOOT_DIGEST1",
              "BLOCK_KEY4", a.pub, "SECURE_BOOT_DIGEST0")
    snapshots = [_efuse_registers(efuse)]
    _espefuse(efuse, "burn-efuse", "SECURE_BOOT_EN", "1", "SECURE_VERSION", "0x5")
    snapshots.append(_efuse_registers(efuse))
    _espefuse(efuse, "burn-efuse", "SECURE_BOOT_KEY_REVOKE0", "1", "SECURE_VERSION", "0xFFFF")
    snapshots.append(_efuse_registers(efuse))
    r = mpy_json(FAKES + """
import binascii
out = []
for regs in json.loads(%r):
    EFUSE.clear()
    EFUSE.update({int(k): v for k, v in regs.items()})
    b = esp32s3.Board({})
    out.append([esp32s3.secure_boot_enabled(),
                [binascii.hexlify(d).decode() for d in b.secure_boot_digests()],
                b.efuse_secure_version()])
print(json.dumps(out))
""" % json.dumps(snapshots))
    assert r == [
        [False, [], 0],                           # digests burned, Secure Boot still off
        [True, [a.digest, b.digest], 2],          # DIGEST0 (KEY4) first; 0x5 = two bits
        [True, [b.digest], 16],                   # DIGEST0 revoked; all 16 bits burned
    ]


def test_watchdog_is_machine_wdt_zero_with_the_timeout():
    r = mpy_json(FAKES + """
from firmware import watchdog
b = esp32s3.Board({})
w = watchdog.start(b, {"watchdog_s": 90})
watchdog.feed()
watchdog.sleep_ms(1)
again = b.watchdog(30000)
print(json.dumps([w is _Machine._wdt, again is w, _Machine._Wdt.timeout, _Machine._Wdt.feeds,
                  watchdog.stop(), watchdog.bitten()]))
""")
    # started with 90 s, fed by feed() and by both ends of sleep_ms(), reconfigured to 30 s;
    # stop() is refused: the ESP32 port's WDT has no deinit
    assert r == [True, True, 30000, 3, False, False]


def test_efuse_fields_read_at_the_addresses_of_esp_idf_efuse_table():
    # efuse_fake lays the fields out from ESP-IDF's esp_efuse_table.csv and block addresses,
    # independently of the driver's constants.
    r = mpy_json(FAKES + """
sys.path.append(%r)
from efuse_fake import Efuse
from firmware.board import hmac_peripheral
e = Efuse()
e.set("USER_DATA", b"SN-BOX3-0042" + bytes(20))
e.set_revision(1, 9)
for i, p in enumerate([4, 0, 9, 8, 0, 5]):
    e.set("KEY_PURPOSE_%%d" %% i, p)
word = e.__getitem__
out = [esp32s3.serial_from_user_data(esp32s3.read_user_data(word)), esp32s3.chip_revision(word),
       esp32s3.wafer_major_check_disabled(word), hmac_peripheral.Hmac(e).key_purposes()]
e.set_revision(0, 2)
e.set("DISABLE_WAFER_VERSION_MAJOR", 1)
out += [esp32s3.chip_revision(word), esp32s3.wafer_major_check_disabled(word)]
print(json.dumps(out))
""" % FAKE_DIR)
    assert r == ["SN-BOX3-0042", 109, False, [4, 0, 9, 8, 0, 5], 2, True]
