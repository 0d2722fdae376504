"""The ESP32-S3 HMAC peripheral driver, run under MicroPython against a register-level fake.

Expected values come from CPython's hmac module; the fake (tests/mpy/hmac_peripheral_fake.py)
hashes exactly the blocks the driver writes, so wrong padding, word order or sequencing fails.
"""
import hashlib
import hmac
import json
import os

from conftest import ROOT, mpy_json

FAKE_DIR = os.path.join(ROOT, "tests", "mpy")
KEY = bytes(range(1, 33))
OTHER = bytes(range(100, 132))
LENGTHS = [0, 1, 16, 32, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 200]


def run(body):
    code = ("import sys, json, binascii\nsys.path.append(%r)\n"
            "from hmac_peripheral_fake import FakeChip, FakeViolation\n"
            "from firmware.board import hmac_peripheral as hp\n" % FAKE_DIR) + body
    return mpy_json(code)


def expected(key, msg):
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def msg_of(n):
    return bytes((7 * i + 3) & 0xFF for i in range(n))


def test_every_padding_shape_gives_the_standard_hmac():
    out = run("""
res = {}
for n in %s:
    chip = FakeChip({3: bytes(range(1, 33))}, [0, 1, 4, 8, 0, 0])
    msg = bytes((7 * i + 3) & 0xFF for i in range(n))
    res[str(n)] = [binascii.hexlify(hp.hmac_sha256(msg, mem32=chip)).decode(), chip.log]
print(json.dumps(res))
""" % json.dumps(LENGTHS))
    for n in LENGTHS:
        digest, steps = out[str(n)]
        assert digest == expected(KEY, msg_of(n)), n
        blocks = (n + 9 + 63) // 64
        assert steps.count("ONE") == blocks
        if blocks == 1:
            assert steps[-2:] == ["ONE_BLOCK", "RESULT_FINISH"]
        else:
            assert "PAD" in steps and steps.count("ING") == blocks - 2


def test_hardware_padding_for_whole_blocks():
    out = run("""
res = {}
for n in (64, 128):
    chip = FakeChip({0: bytes(range(1, 33))}, [8, 0, 0, 0, 0, 0])
    msg = bytes((7 * i + 3) & 0xFF for i in range(n))
    d = hp.Hmac(chip).hmac_sha256(msg, hw_pad=True)
    res[str(n)] = [binascii.hexlify(d).decode(), chip.log]
print(json.dumps(res))
""")
    for n in (64, 128):
        digest, steps = out[str(n)]
        assert digest == expected(KEY, msg_of(n))
        assert "END" in steps and "PAD" not in steps


def test_key_block_comes_from_the_efuse_purpose_scan_and_can_be_configured():
    out = run("""
keys = {1: bytes(range(100, 132)), 4: bytes(range(1, 33))}
chip = FakeChip(keys, [2, 0, 0, 0, 8, 0])
scan = hp.Hmac(chip).find_key_block()
d1 = hp.hmac_sha256(b"challenge", mem32=chip)
chip = FakeChip(keys, [2, 8, 0, 0, 8, 0])
hp.configure(4)
d2 = hp.hmac_sha256(b"challenge", mem32=chip)
hp.configure(None)
d3 = hp.hmac_sha256(b"challenge", mem32=chip)  # first HMAC_UP block: 1
print(json.dumps([scan] + [binascii.hexlify(d).decode() for d in (d1, d2, d3)]))
""")
    assert out[0] == 4
    assert out[1] == expected(KEY, b"challenge")
    assert out[2] == expected(KEY, b"challenge")
    assert out[3] == expected(OTHER, b"challenge")


def test_wrong_purpose_or_no_key_is_an_oserror_and_clocks_are_restored():
    out = run("""
res = []
chip = FakeChip({2: bytes(32)}, [0, 0, 6, 0, 0, 0], clk=0x1, rst=0x3f)
try:
    hp.hmac_sha256(b"x", key_block=2, mem32=chip)
    res.append("no error")
except OSError as e:
    res.append(str(e))
res.append([chip.regs[0x600C001C], chip.regs[0x600C0024], chip.state])
chip = FakeChip({}, [0, 0, 0, 0, 0, 0])
try:
    hp.hmac_sha256(b"x", mem32=chip)
    res.append("no error")
except OSError as e:
    res.append(str(e))
print(json.dumps(res))
""")
    assert "not an HMAC_UP key" in out[0]
    assert out[1] == [0x1, 0x3F, "idle"]   # clocks off and resets asserted again, as before
    assert "no efuse key block" in out[2]


def test_driver_polls_busy_and_leaves_other_clock_bits_alone():
    out = run("""
chip = FakeChip({0: bytes(range(1, 33))}, [8, 0, 0, 0, 0, 0], busy_reads=5, clk=0x300, rst=0x1)
d = hp.hmac_sha256(b"a" * 100, mem32=chip)
print(json.dumps([binascii.hexlify(d).decode(), chip.busy_polls, chip.regs[0x600C001C], chip.regs[0x600C0024]]))
""")
    assert out[0] == expected(KEY, b"a" * 100)
    assert out[1] > 5 * 3          # it really waited out each busy phase
    assert out[2] == 0x300 and out[3] == 0x1


def test_a_stuck_peripheral_raises_instead_of_hanging():
    out = run("""
chip = FakeChip({0: bytes(32)}, [8, 0, 0, 0, 0, 0], busy_reads=10 ** 9)
try:
    hp.Hmac(chip, busy_polls=50).hmac_sha256(b"x")
    print(json.dumps("no error"))
except OSError as e:
    print(json.dumps(str(e)))
""")
    assert "busy" in out


def test_the_fake_rejects_out_of_order_use():
    # The fake must be able to fail: writing a block without waiting out busy is caught.
    out = run("""
chip = FakeChip({0: bytes(32)}, [8, 0, 0, 0, 0, 0])
chip[0x600C001C] = 0x34
chip[0x600C0024] = 0
chip[hp.SET_START] = 1
chip[hp.SET_PARA_PURPOSE] = 8
chip[hp.SET_PARA_KEY] = 0
chip[hp.SET_PARA_FINISH] = 1
try:
    chip[hp.WR_MESSAGE] = 0
    print(json.dumps("accepted"))
except FakeViolation as e:
    print(json.dumps(str(e)))
""")
    assert "busy" in out


# esp_hmac_calculate() for a one-block message, register by register as ESP-IDF does it:
# components/esp_security/src/esp_hmac.c lines 71-172 with hmac_hal.c / esp32s3 hmac_ll.h, and
# esp_crypto_*_enable_periph_clk (esp_crypto_periph_clk.c lines 68-83, 119-140): enabling sets
# the bus clock and pulses the reset; disabling only stops the clock. `reset=False` leaves the
# reset pulse out, to show what the finish value alone does.
IDF_CALC = """
def wait(chip):
    while chip[hp.QUERY_BUSY]:
        pass

def idf_calc(chip, msg, key_block, reset=True):
    chip[hp.PERIP_CLK_EN1] = chip[hp.PERIP_CLK_EN1] | hp.CRYPTO_BITS
    if reset:
        chip[hp.PERIP_RST_EN1] = chip[hp.PERIP_RST_EN1] | hp.CRYPTO_BITS
    chip[hp.PERIP_RST_EN1] = chip[hp.PERIP_RST_EN1] & ~hp.CRYPTO_BITS
    wait(chip); chip[hp.SET_START] = 1                      # hmac_hal_start
    wait(chip); chip[hp.SET_PARA_PURPOSE] = 8               # hmac_hal_configure
    chip[hp.SET_PARA_KEY] = key_block; chip[hp.SET_PARA_FINISH] = 1; wait(chip)
    assert not chip[hp.QUERY_ERROR]
    block = hp.pad(msg)                                     # one block: len + 9 <= 64
    wait(chip)                                              # hmac_hal_write_one_block_512
    for i in range(16):
        chip[hp.WR_MESSAGE + 4 * i] = int.from_bytes(block[4 * i:4 * i + 4], "little")
    chip[hp.SET_MESSAGE_ONE] = 1
    wait(chip); chip[hp.ONE_BLOCK] = 1
    wait(chip)                                              # hmac_hal_read_result_256
    out = b"".join(chip[hp.RD_RESULT + 4 * i].to_bytes(4, "little") for i in range(8))
    chip[hp.SET_RESULT_FINISH] = 2                          # hmac_ll_calc_finish, hmac_ll.h:220
    chip[hp.PERIP_CLK_EN1] = chip[hp.PERIP_CLK_EN1] & ~hp.CRYPTO_BITS
    return binascii.hexlify(out).decode()
"""


def test_esp_idf_own_sequence_works_on_the_fake_because_it_resets_first():
    out = run(IDF_CALC + """
chip = FakeChip({2: bytes(range(1, 33))}, [0, 0, 8, 0, 0, 0])
res = [idf_calc(chip, b"challenge", 2), idf_calc(chip, b"again", 2), chip.finish_values, chip.resets]
try:
    idf_calc(chip, b"third", 2, reset=False)   # the finish value 2 did not release the result
    res.append("accepted")
except FakeViolation as e:
    res.append(str(e))
print(json.dumps(res))
""")
    assert out[0] == expected(KEY, b"challenge") and out[1] == expected(KEY, b"again")
    assert out[2] == [2, 2] and out[3] == 1     # the second enable's pulse (it starts in reset)
    assert "START while the last result was not released" in out[4]


def test_driver_finishes_with_bit_0_and_resets_the_peripheral_before_each_use():
    # Left enabled and out of reset by its last user, in the middle of a result: the driver's
    # reset pulse (ESP-IDF's hmac_ll_reset_register) makes that harmless, and its own finish
    # writes HMAC_SET_RESULT_END (bit 0) so it releases the result even without a reset.
    out = run(IDF_CALC + """
chip = FakeChip({2: bytes(range(1, 33))}, [0, 0, 8, 0, 0, 0])
idf_calc(chip, b"left over", 2)
chip[hp.PERIP_CLK_EN1] = hp.CRYPTO_BITS          # someone left the clocks on, result pending
res = [binascii.hexlify(hp.hmac_sha256(b"challenge", mem32=chip)).decode()]
res.append(idf_calc(chip, b"after", 2, reset=False))   # our finish released the peripheral
res += [chip.finish_values, chip.resets]
print(json.dumps(res))
""")
    assert out[0] == expected(KEY, b"challenge") and out[1] == expected(KEY, b"after")
    assert out[2] == [2, 1, 2]      # ESP-IDF's 2, the driver's 1, ESP-IDF's 2
    assert out[3] == 1              # the driver's pulse (the chip starts in reset)
