"""The ESP-BOX-3 OTA partition table: CSV <-> binary, and the layout rules a 16 MiB OTA board needs."""
import hashlib
import os
import subprocess
import sys

import pytest

import partition_table as pt
from conftest import ROOT, mpy_json

CSV = os.path.join(ROOT, "tools", "board", "partitions-esp-box-3-ota.csv")
FLASH_16M = 16 * 1024 * 1024
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def rows():
    with open(CSV) as f:
        return pt.parse_csv(f.read())


def by_label(rows):
    return {r[0]: r for r in rows}


def test_csv_binary_csv_round_trip(rows):
    blob = pt.to_binary(rows)
    assert len(blob) == pt.TABLE_SIZE
    assert pt.from_binary(blob) == rows
    assert pt.parse_csv(pt.to_csv(rows)) == rows
    assert pt.to_binary(pt.parse_csv(pt.to_csv(pt.from_binary(blob)))) == blob


def test_entries_and_md5_entry_are_laid_out_as_esp_idf_reads_them(rows):
    blob = pt.to_binary(rows)
    n = len(rows)
    for i, (label, t, st, off, size, flags) in enumerate(rows):
        e = blob[32 * i:32 * (i + 1)]
        assert e[:2] == b"\xaa\x50" and e[2] == t and e[3] == st
        assert int.from_bytes(e[4:8], "little") == off and int.from_bytes(e[8:12], "little") == size
        assert e[12:28].rstrip(b"\0") == label.encode()
    md5_entry = blob[32 * n:32 * (n + 1)]
    assert md5_entry[:16] == b"\xeb\xeb" + b"\xff" * 14
    assert md5_entry[16:] == hashlib.md5(blob[:32 * n]).digest()
    assert set(blob[32 * (n + 1):]) == {0xFF}


@pytest.mark.parametrize("where", ["entry", "md5", "truncated", "magic"])
def test_corrupted_table_is_rejected(rows, where):
    blob = bytearray(pt.to_binary(rows))
    n = len(rows)
    if where == "entry":
        blob[32 + 5] ^= 0x01           # a bit of the second entry's offset
    elif where == "md5":
        blob[32 * n + 20] ^= 0xFF
    elif where == "truncated":
        blob[32 * n:] = b"\xff" * (len(blob) - 32 * n)  # MD5 entry gone
    else:
        blob[0] = 0x00
    with pytest.raises(pt.TableError):
        pt.from_binary(bytes(blob))


def test_table_fits_16_mib_and_not_less(rows):
    assert pt.validate(rows, FLASH_16M) == rows
    end = max(off + size for _, _, _, off, size, _ in rows)
    assert end <= FLASH_16M
    with pytest.raises(pt.TableError):
        pt.validate(rows, 8 * MIB)


def test_alignment_and_no_overlap(rows):
    prev_end = pt.TABLE_OFFSET + pt.TABLE_SIZE
    for label, t, st, off, size, _ in sorted(rows, key=lambda r: r[3]):
        assert off >= prev_end, label
        assert off % 0x1000 == 0 and size % 0x1000 == 0, label
        if t == 0:
            assert off % 0x10000 == 0, "app partition %s must be 64 KiB aligned" % label
        prev_end = off + size


def test_two_equal_ota_slots_with_headroom_and_otadata(rows):
    p = by_label(rows)
    apps = [r for r in rows if r[1] == 0]
    assert sorted(r[2] for r in apps) == [0x10, 0x11], "exactly ota_0 and ota_1, no factory"
    assert p["ota_0"][4] == p["ota_1"][4] >= 2 * MIB
    assert p["ota_0"][3] == 0x10000, "merged MicroPython images put the app at 0x10000"
    assert p["otadata"][1:3] == (1, 0x00) and p["otadata"][4] == 0x2000
    assert p["nvs"][1:3] == (1, 0x02) and p["nvs"][4] >= 0x3000
    assert p["phy_init"][1:3] == (1, 0x01)
    # MicroPython mounts the partition labelled "vfs"; it takes the rest of the flash.
    assert p["vfs"][1] == 1 and p["vfs"][3] + p["vfs"][4] == FLASH_16M and p["vfs"][4] >= 4 * MIB


@pytest.mark.parametrize("csv, message", [
    ("ota_0, app, ota_0, 0x10800, 0x100000,", "not aligned"),
    ("nvs, data, nvs, 0x9000, 0x6000,\notadata, data, ota, 0xd000, 0x2000,", "overlaps"),
    ("nvs, data, nvs, 0x8000, 0x1000,", "overlaps"),
])
def test_validator_rejects_bad_layouts(csv, message):
    with pytest.raises(pt.TableError, match=message):
        pt.parse_csv(csv)


def test_command_line_round_trip(tmp_path, rows):
    out = tmp_path / "pt.bin"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "partition_table.py"), CSV, str(out)],
                   check=True)
    assert out.read_bytes() == pt.to_binary(rows)
    text = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "partition_table.py"), str(out)],
                          check=True, capture_output=True, text=True).stdout
    assert pt.parse_csv(text) == rows


def test_the_simulated_board_uses_this_table(tmp_path, rows):
    try:
        import mkflash
    except ImportError:
        pytest.skip("tools/mkflash.py not written yet")
    root = mkflash.make_device_root(str(tmp_path), version="1.0.0")
    with open(os.path.join(root, "flash.bin"), "rb") as f:
        flash = f.read()
    assert len(flash) == FLASH_16M
    assert flash[pt.TABLE_OFFSET:pt.TABLE_OFFSET + pt.TABLE_SIZE] == pt.to_binary(rows)
    # ... and the device's own parser, under the real MicroPython, reads the same layout from it.
    got = mpy_json("import json, firmware.partition_table as p\n"
                   "f = open(%r, 'rb'); f.seek(p.OFFSET); blob = f.read(p.MAX_LEN); f.close()\n"
                   "print(json.dumps(p.parse(blob)))" % os.path.join(root, "flash.bin"))
    assert [tuple(r) for r in got] == [(t, st, off, size, label, False) for label, t, st, off, size, _ in rows]
