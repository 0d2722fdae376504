"""The simulated flash chip, partition table, otadata and bootloader, run on the unix port."""
import binascii
import hashlib
import struct

import pytest

import mkflash
import partition_table
from conftest import mpy_json, run_mpy

SETUP = """
import json
from firmware.board.nor_flash import NorFlash, FlashError
f = NorFlash('flash.bin')
"""


def test_partition_table_binary_round_trip_and_md5():
    rows = mkflash.load_table()
    blob = partition_table.to_binary(rows)
    n = len(rows) * 32
    assert blob[n:n + 2] == b"\xeb\xeb"
    assert blob[n + 16:n + 32] == hashlib.md5(blob[:n]).digest()
    assert partition_table.from_binary(blob) == rows
    assert partition_table.parse_csv(partition_table.to_csv(rows)) == rows
    corrupt = bytearray(blob)
    corrupt[5] ^= 1
    with pytest.raises(partition_table.TableError):
        partition_table.from_binary(bytes(corrupt))


def test_device_parser_reads_the_table_the_host_wrote(sim_root):
    rows = mpy_json("""
import json
from firmware import partition_table
with open('flash.bin', 'rb') as f:
    f.seek(0x8000); blob = f.read(0xC00)
print(json.dumps(partition_table.parse(blob)))
""", cwd=sim_root)
    expected = [[t, st, off, size, label, False] for label, t, st, off, size, _ in mkflash.load_table()]
    assert rows == expected
    labels = [r[4] for r in rows]
    assert labels == ["nvs", "otadata", "phy_init", "ota_0", "ota_1", "vfs"]


def test_device_parser_rejects_bad_md5(sim_root):
    with open(sim_root + "/flash.bin", "r+b") as f:
        f.seek(0x8000 + 9)                      # size of the first entry: 0x4000 -> 0x4100
        f.write(b"\x41")
    out = run_mpy("""
from firmware import partition_table
with open('flash.bin', 'rb') as f:
    f.seek(0x8000); blob = f.read(0xC00)
try:
    partition_table.parse(blob)
    print('accepted')
except partition_table.TableError as e:
    print('rejected', e)
""", cwd=sim_root).stdout
    assert "rejected partition table MD5 mismatch" in out


def test_nor_flash_only_clears_bits_and_erases_in_sectors(sim_root):
    # NOR page program can only clear bits: programming over data gives old AND new, and
    # ESP-IDF's esp_flash_write reports success (no verify by default). The sim counts it.
    r = mpy_json(SETUP + """
base = 0x700000
out = {}
f.program(base, b'\\x0f\\xf0')
f.program(base, b'\\xff\\xff')          # 0 -> 1 is impossible without an erase
buf = bytearray(2); f.read(base, buf); out['over'] = list(buf)
out['conflicts'] = f.conflicts
f.program(base, b'\\x0e\\x00')              # clearing more bits is fine
f.read(base, buf); out['after'] = list(buf)
try:
    f.erase(base + 1, 4096)
    out['unaligned'] = 'allowed'
except FlashError:
    out['unaligned'] = 'refused'
f.erase(base, 4096)
f.read(base, buf); out['erased'] = list(buf)
f.erase(0x710000, 0x20000)               # two aligned 64 KiB blocks
f.erase(0x731000, 0x2000)                # two 4 KiB sectors
out['counters'] = f.counters()
f.reset_counters()
f.erase(0x74F000, 0x22000)               # sector, block, block, sector (esp_flash_erase_region)
out['mixed'] = [f.erase_4k, f.erase_64k]
print(json.dumps(out))
""", cwd=sim_root)
    assert r["over"] == [0x0F, 0xF0] and r["conflicts"] == 2
    assert r["after"] == [0x0E, 0x00]
    assert r["unaligned"] == "refused"
    assert r["erased"] == [0xFF, 0xFF]
    assert r["counters"] == {"erase_4k": 3, "erase_64k": 2, "programmed_bytes": 6, "program_ops": 3,
                             "conflicts": 2}
    assert r["mixed"] == [2, 2]


def _otadata(root):
    with open(root + "/flash.bin", "rb") as f:
        f.seek(0xD000)
        raw = f.read(0x2000)
    out = []
    for i in (0, 1):
        seq, _, state, crc = struct.unpack_from("<I20sII", raw, i * 4096)
        out.append((seq, state, crc))
    return out


def _esp_idf_crc(seq):
    # What ESP-IDF's otatool computes for an esp_ota_select_entry_t.
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


BOOT = """
import json
from firmware.board import sim
b = sim.Board({})
"""


def _install_image(root, version, slot_offset=0x310000):
    import build_image
    img = build_image.build_image(version)
    with open(root + "/flash.bin", "r+b") as f:
        f.seek(slot_offset)
        f.write(img)


def test_otadata_selection_crc_and_rollback(sim_root):
    # Blank otadata boots ota_0, and the bootloader records that choice as otadata[0] =
    # {seq 1, VALID} (bootloader_utility.c set_actual_ota_seq, no factory partition).
    r = mpy_json(BOOT + "print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version, b.ota_state()]))",
                 cwd=sim_root)
    assert r == ["ota_0", "1.0.0", "valid"]
    assert _otadata(sim_root) == [(1, 2, _esp_idf_crc(1)), (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)]
    _install_image(sim_root, "1.1.0")
    r = mpy_json(BOOT + """
nxt = b.Partition(b.Partition.RUNNING).get_next_update()
nxt.set_boot()
print(json.dumps(nxt.info()[4]))""", cwd=sim_root)
    assert r == "ota_1"
    seq, state, crc = _otadata(sim_root)[1]   # esp_rewrite_ota_data writes the other entry
    assert (seq, state) == (2, 0) and crc == _esp_idf_crc(2)   # slot (2-1)%2 = ota_1, state NEW
    # Next boot runs ota_1 pending verification; not confirming it ...
    r = mpy_json(BOOT + "print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version, b.ota_state()]))",
                 cwd=sim_root)
    assert r == ["ota_1", "1.1.0", "pending-verify"]
    # ... rolls back on the boot after.
    r = mpy_json(BOOT + "print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.app_desc().version]))",
                 cwd=sim_root)
    assert r == ["ota_0", "1.0.0"]
    assert _otadata(sim_root)[1][1] == 4  # ABORTED
    assert _otadata(sim_root)[0][:2] == (1, 2)  # ota_0's VALID entry untouched


def test_confirmed_image_stays(sim_root):
    _install_image(sim_root, "1.2.0")
    run_mpy(BOOT + "b.Partition(b.Partition.RUNNING).get_next_update().set_boot()", cwd=sim_root)
    run_mpy(BOOT + "b.Partition.mark_app_valid_cancel_rollback()", cwd=sim_root)
    assert _otadata(sim_root)[1][1] == 2  # VALID
    for _ in range(2):
        r = mpy_json(BOOT + "print(json.dumps([b.Partition(b.Partition.RUNNING).info()[4], b.ota_state()]))",
                     cwd=sim_root)
        assert r == ["ota_1", "valid"]


def test_set_boot_refuses_an_image_that_does_not_verify(sim_root):
    _install_image(sim_root, "1.3.0")
    with open(sim_root + "/flash.bin", "r+b") as f:   # a torn write: last bytes never landed
        f.seek(0x310000 + 5000)
        f.write(b"\x5a")
    out = run_mpy(BOOT + """
try:
    b.Partition('ota_1').set_boot()
    print('switched')
except OSError as e:
    print('refused', e.args)
""", cwd=sim_root).stdout
    # esp_ota_set_boot_partition -> ESP_ERR_OTA_VALIDATE_FAILED (0x1503), raised by check_esp_err
    assert "refused (-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')" in out
    assert _otadata(sim_root) == [(1, 2, _esp_idf_crc(1)), (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)]


def test_bootloader_falls_back_when_selected_image_is_corrupt(sim_root):
    _install_image(sim_root, "1.4.0")
    run_mpy(BOOT + "b.Partition('ota_1').set_boot()", cwd=sim_root)
    with open(sim_root + "/flash.bin", "r+b") as f:
        f.seek(0x310000 + 2000)                 # inside segment data
        f.write(b"\x5a\xa5")
    r = mpy_json(BOOT + "print(json.dumps(b.Partition(b.Partition.RUNNING).info()[4]))", cwd=sim_root)
    assert r == "ota_0"
