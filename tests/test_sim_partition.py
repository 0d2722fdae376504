"""The simulated esp32.Partition, behaviour by behaviour, against MicroPython's
ports/esp32/esp32_partition.c (v1.24 .. v1.28, line numbers of v1.28.0) and ESP-IDF v5.4.2
(esp_partition/partition_target.c, app_update/esp_ota_ops.c). Each expected value is read off
the C source, not off the sim, so the sim cannot drift from the board again."""
from conftest import mpy_json

OTA1 = 0x310000          # ota_1 of the ESP-BOX-3 table (tools/board/partitions-esp-box-3-ota.csv)
OTA1_SIZE = 0x300000
EINVAL = 22              # newlib errno on the esp32 port (MICROPY_USE_INTERNAL_ERRNO 0)
ENOENT = 2
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104

BOOT = """
import json
from firmware.board import sim
b = sim.Board({})
P = b.Partition
f = b.flash
def err(fn):
    try:
        fn()
        return None
    except OSError as e:
        return list(e.args)
    except Exception as e:
        return type(e).__name__
out = {}
"""


def run(root, code):
    return mpy_json(BOOT + code + "\nprint(json.dumps(out))", cwd=root)


def test_block_size_is_a_uint16(sim_root):
    # esp32_partition.c:53 `uint16_t block_size`; make_new (122-124) and find (168) truncate.
    r = run(sim_root, """
out['64k'] = P('ota_1', 65536).ioctl(5, 0)
out['68k'] = P('ota_1', 65536 + 4096).ioctl(5, 0)
out['find'] = P.find(P.TYPE_APP, label='ota_1', block_size=65536)[0].ioctl(5, 0)
out['default'] = P('ota_1').ioctl(5, 0)
""")
    assert r == {"64k": 0, "68k": 4096, "find": 0, "default": 4096}


def test_block_erase_needs_native_block_size_and_erases_nothing_otherwise(sim_root):
    # ioctl BLOCK_ERASE (lines 264-271): block_size != 4096 -> return -MP_EINVAL, no raise.
    r = run(sim_root, """
P('ota_1').writeblocks(0, b'\\x00' * 4096)      # something to (not) erase
f.reset_counters()
out['64k'] = P('ota_1', 65536).ioctl(6, 0)
out['512'] = P('ota_1', 512).ioctl(6, 0)
out['after_refused'] = f.counters()
buf = bytearray(16); P('ota_1').readblocks(0, buf); out['data'] = list(buf)
out['4096'] = P('ota_1').ioctl(6, 0)
out['after'] = [f.erase_4k, f.erase_64k]
P('ota_1').readblocks(0, buf); out['erased'] = list(buf)
""")
    assert r["64k"] == -EINVAL and r["512"] == -EINVAL
    assert r["after_refused"]["erase_4k"] == r["after_refused"]["erase_64k"] == 0
    assert r["data"] == [0] * 16
    assert r["4096"] == 0 and r["after"] == [1, 0] and r["erased"] == [0xFF] * 16


def test_other_ioctls(sim_root):
    # INIT/DEINIT/SYNC -> 0, BLOCK_COUNT = size / block_size (C division: by 0 the Xtensa core
    # raises IntegerDivideByZero and the board panics), BLOCK_SIZE, unknown -> None.
    r = run(sim_root, """
p = P('ota_1')
out['init'] = [p.ioctl(1, 0), p.ioctl(2, 0), p.ioctl(3, 0)]
out['count'] = [p.ioctl(4, 0), P('ota_1', 512).ioctl(4, 0)]
out['zero'] = err(lambda: P('ota_1', 65536).ioctl(4, 0))
out['unknown'] = p.ioctl(99, 0)
""")
    assert r["init"] == [0, 0, 0]
    assert r["count"] == [OTA1_SIZE // 4096, OTA1_SIZE // 512]
    assert r["zero"] == "ZeroDivisionError"
    assert r["unknown"] is None


def test_three_arg_writeblocks_erases_len_bytes_first(sim_root):
    # writeblocks n_args == 3, block_size >= 4096 (218-220): esp_partition_erase_range(offset,
    # len), which esp_flash_erase_region turns into 64 KiB block erases where aligned.
    r = run(sim_root, """
p = P('ota_1')
p.writeblocks(16, b'\\x00' * 65536)            # dirty the block first
p.writeblocks(16, b'\\x00' * 65536, 0)         # 4-arg: no erase, over data
f.reset_counters()
p.writeblocks(16, bytes(range(256)) * 256)      # 3-arg, 64 KiB at a 64 KiB boundary
out['block'] = f.counters()
buf = bytearray(4); p.readblocks(16, buf, 65532); out['tail'] = list(buf)
f.reset_counters()
p.writeblocks(33, b'\\x01' * 8192)             # 3-arg, two sectors off block alignment
out['sectors'] = [f.erase_4k, f.erase_64k]
out['unaligned_len'] = err(lambda: p.writeblocks(40, b'\\x02' * 100))
""")
    assert (r["block"]["erase_64k"], r["block"]["erase_4k"], r["block"]["conflicts"]) == (1, 0, 0)
    assert r["block"]["programmed_bytes"] == 65536
    assert r["tail"] == [252, 253, 254, 255]
    assert r["sectors"] == [2, 0]
    # esp_partition_erase_range: size % SPI_FLASH_SEC_SIZE -> ESP_ERR_INVALID_SIZE; raised by
    # check_esp_err as OSError(-code, name) before anything is written.
    assert r["unaligned_len"] == [-ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE"]


def test_four_arg_writeblocks_does_not_erase(sim_root):
    # n_args == 4 (241-244): offset += arg, esp_partition_write only. Over data: old AND new.
    r = run(sim_root, """
p = P('ota_1')
p.writeblocks(2, b'\\x0f' * 16, 8)
f.reset_counters()
p.writeblocks(2, b'\\xf3' * 16, 8)
out['c'] = f.counters()
buf = bytearray(16); p.readblocks(2, buf, 8); out['data'] = list(buf)
""")
    assert r["c"]["erase_4k"] == r["c"]["erase_64k"] == 0
    assert r["c"]["conflicts"] == 16
    assert r["data"] == [0x03] * 16


def test_small_block_writes_read_modify_erase(sim_root):
    # block_size < 4096 (221-239): each touched sector is read into the cache, erased, and the
    # bytes outside the write put back. With block_size 0 (a truncated 65536) offset = n * 0.
    r = run(sim_root, """
p = P('ota_1')
p.writeblocks(0, bytes(range(256)) * 16)        # sector 0 = a known pattern
q = P('ota_1', 512)
f.reset_counters()
q.writeblocks(3, b'\\xaa' * 512)               # bytes 1536..2047
out['c'] = [f.erase_4k, f.erase_64k]
buf = bytearray(4096); p.readblocks(0, buf)
out['ok'] = bytes(buf) == (bytes(range(256)) * 16)[:1536] + b'\\xaa' * 512 + (bytes(range(256)) * 16)[2048:]
z = P('ota_1', 65536)
z.writeblocks(7, b'\\x55' * 4)                 # lands at offset 0, not 7 * 65536
b4 = bytearray(4); p.readblocks(0, b4); out['zero'] = list(b4)
b4 = bytearray(4); p.readblocks(7 * 16, b4); out['block7'] = list(b4)
""")
    assert r["c"] == [1, 0] and r["ok"]
    assert r["zero"] == [0x55] * 4 and r["block7"] == [0xFF] * 4


def test_readblocks_offset_and_bounds(sim_root):
    # readblocks (198-207): offset = n * block_size + arg; esp_partition_read checks
    # src_offset > size -> ESP_ERR_INVALID_ARG, size > part size - offset -> INVALID_SIZE.
    r = run(sim_root, """
p = P('ota_1')
p.writeblocks(1, bytes(range(256)) * 16)
buf = bytearray(3); p.readblocks(1, buf, 10); out['data'] = list(buf)
out['past'] = err(lambda: p.readblocks(p.ioctl(4, 0) + 1, bytearray(1)))
out['over'] = err(lambda: p.readblocks(p.ioctl(4, 0) - 1, bytearray(8), 4090))
out['end'] = err(lambda: p.readblocks(p.ioctl(4, 0), bytearray(0)))
""")
    assert r["data"] == [10, 11, 12]
    assert r["past"] == [-ESP_ERR_INVALID_ARG, "ESP_ERR_INVALID_ARG"]
    assert r["over"] == [-ESP_ERR_INVALID_SIZE, "ESP_ERR_INVALID_SIZE"]
    assert r["end"] is None    # offset == size with length 0 is allowed


def test_constructor_lookup_errors(sim_root):
    # make_new: an int other than BOOT/RUNNING -> ValueError; an unknown label -> NULL ->
    # esp32_partition_new raises OSError(MP_ENOENT). Labels search app, then data partitions.
    r = run(sim_root, """
out['bad_int'] = err(lambda: P(7))
out['no_label'] = err(lambda: P('nope'))
out['data'] = P('nvs').info()[:2]
out['info'] = list(P('ota_1').info())
""")
    assert r["bad_int"] == "ValueError"
    assert r["no_label"] == [ENOENT]
    assert r["data"] == [1, 2]
    assert r["info"] == [0, 0x11, OTA1, OTA1_SIZE, "ota_1", False]


def test_get_next_update_and_its_block_size(sim_root):
    # esp_ota_get_next_update_partition: the OTA slot after self, wrapping to the first; the
    # port always builds it with NATIVE_BLOCK_SIZE_BYTES (line 287).
    r = run(sim_root, """
out['from0'] = P('ota_0', 512).get_next_update().info()[4]
out['bs'] = P('ota_0', 512).get_next_update().ioctl(5, 0)
out['from1'] = P('ota_1').get_next_update().info()[4]
out['from_data'] = P('vfs').get_next_update().info()[4]
""")
    assert r == {"from0": "ota_1", "bs": 4096, "from1": "ota_0", "from_data": "ota_0"}


def test_set_boot_and_mark_valid_error_mapping(sim_root):
    # esp_ota_set_boot_partition: image_validate first -> ESP_ERR_OTA_VALIDATE_FAILED (0x1503),
    # also for a data partition. esp_ota_mark_app_valid_cancel_rollback with no valid otadata
    # entry -> ESP_FAIL (-1), which check_esp_err raises as OSError(1, 'ESP_FAIL').
    r = run(sim_root, """
out['blank_slot'] = err(lambda: P('ota_1').set_boot())
out['data'] = err(lambda: P('nvs').set_boot())
out['valid'] = err(lambda: P.mark_app_valid_cancel_rollback())
od = P('otadata')
od.ioctl(6, 0); od.ioctl(6, 1)
out['no_entry'] = err(lambda: P.mark_app_valid_cancel_rollback())
""")
    assert r["blank_slot"] == [-0x1503, "ESP_ERR_OTA_VALIDATE_FAILED"]
    assert r["data"] == [-0x1503, "ESP_ERR_OTA_VALIDATE_FAILED"]
    assert r["valid"] is None
    assert r["no_entry"] == [1, "ESP_FAIL"]


def test_image_checks_read_right_through_any_block_size(sim_root):
    # image_scan reads at block 0 + byte offset, which the port maps to the same address for
    # every block size (readblocks: n * block_size + offset) -- also for a truncated 0.
    r = run(sim_root, """
from firmware import image_scan
out['desc'] = [image_scan.read_app_desc(P('ota_0', bs)).version for bs in (4096, 512, 65536)]
image_scan.verify_image(P('ota_0', 65536))
out['verified'] = True
""")
    assert r == {"desc": ["1.0.0"] * 3, "verified": True}
