# ESP32-S3 HMAC accelerator, upstream mode, driven through its registers.
#
# Facts (ESP32-S3 TRM, "HMAC Accelerator"; register offsets as in ESP-IDF soc/hwcrypto_reg.h):
# - The key is one of the six efuse key blocks (KEY0..KEY5) whose efuse KEY_PURPOSE is
#   HMAC_UP (8); the peripheral refuses (QUERY_ERROR = 1) a block with another purpose. The key
#   itself stays read-protected in the efuse: software never sees it.
# - The message goes in as 512-bit blocks written to WR_MESSAGE_0..15 as little-endian words of
#   the block's bytes, each started with SET_MESSAGE_ONE. Software applies the SHA-256 padding,
#   whose length field counts the K0^ipad block the peripheral hashes first: 8 * (64 + len(msg)).
#   After each block: SET_MESSAGE_ING when more than one padded block follows, SET_MESSAGE_PAD
#   when exactly the last one follows, ONE_BLOCK when the whole padded message was one block.
#   (For a message that is a whole number of blocks, SET_MESSAGE_END makes the hardware pad.)
# - The 256-bit result is read from RD_RESULT_0..7 (little-endian words = the digest's bytes in
#   order), then SET_RESULT_FINISH clears it. QUERY_BUSY must read 0 before each step.
# - SET_RESULT_FINISH: its one field is HMAC_SET_RESULT_END at bit 0 ("exit upstream mode and
#   clear calculation results"; ESP-IDF components/soc/esp32c5/register/soc/hmac_reg.h lines
#   110-116, the same in the esp32c6/esp32h2 headers; ESP-IDF has no generated esp32s3 header),
#   so this driver writes 1. ESP-IDF's hmac_ll_calc_finish() writes 2 on every chip
#   (components/esp_hal_security/esp32s3/include/hal/hmac_ll.h line 220, since commit 1c3be690
#   "HMAC upstream support for S3"), a reserved bit. It never depends on it: esp_hmac_calculate()
#   (components/esp_security/src/esp_hmac.c line 74) enables the peripheral through
#   esp_crypto_hmac_enable_periph_clk(true), which pulses its reset (hmac_ll_reset_register,
#   components/esp_security/src/esp_crypto_periph_clk.c lines 119-127), so every calculation
#   starts from reset whatever the last one left. This driver does the same (see below) and
#   writes the documented bit, so it is right either way.
# - The HMAC, SHA and DS clocks must run and their resets be pulsed then released
#   (SYSTEM_PERIP_CLK_EN1 / SYSTEM_PERIP_RST_EN1; DS otherwise holds SHA in reset: esp_hmac.c
#   line 73, and esp_crypto_periph_clk.c resets SHA and DS on enable too, lines 68-83 / 132-140).
#   The previous clock/reset bits are restored afterwards.
# - Not done: ESP-IDF also takes esp_crypto_hmac_lock_acquire() (esp_hmac.c line 71), which takes
#   the SHA/AES lock (components/esp_security/src/esp_crypto_lock.c lines 61-65), so no other task
#   uses the SHA engine meanwhile. MicroPython has no binding to that lock. Our own task is busy
#   here, but another ESP-IDF task (e.g. the Wi-Fi supplicant with hardware SHA) could collide;
#   the activation server then rejects the HMAC and activation asks for a new challenge.
# Key block: the `key_block` argument, else configure(n), else the first efuse key block whose
# purpose is HMAC_UP (scan of EFUSE_RD_REPEAT_DATA1/2).

HMAC_BASE = 0x6003E000
SET_START = HMAC_BASE + 0x40
SET_PARA_PURPOSE = HMAC_BASE + 0x44
SET_PARA_KEY = HMAC_BASE + 0x48
SET_PARA_FINISH = HMAC_BASE + 0x4C
SET_MESSAGE_ONE = HMAC_BASE + 0x50
SET_MESSAGE_ING = HMAC_BASE + 0x54
SET_MESSAGE_END = HMAC_BASE + 0x58
SET_RESULT_FINISH = HMAC_BASE + 0x5C
RESULT_END = 1                   # HMAC_SET_RESULT_END, bit 0 of SET_RESULT_FINISH (see above)
QUERY_ERROR = HMAC_BASE + 0x68
QUERY_BUSY = HMAC_BASE + 0x6C
WR_MESSAGE = HMAC_BASE + 0x80   # 16 words
RD_RESULT = HMAC_BASE + 0xC0    # 8 words
SET_MESSAGE_PAD = HMAC_BASE + 0xF0
ONE_BLOCK = HMAC_BASE + 0xF4

SYSTEM_BASE = 0x600C0000
PERIP_CLK_EN1 = SYSTEM_BASE + 0x1C
PERIP_RST_EN1 = SYSTEM_BASE + 0x24
CRYPTO_SHA = 1 << 2
CRYPTO_DS = 1 << 4
CRYPTO_HMAC = 1 << 5
CRYPTO_BITS = CRYPTO_SHA | CRYPTO_DS | CRYPTO_HMAC

# ESP-IDF components/soc/esp32s3/register/soc/efuse_reg.h: EFUSE_RD_REPEAT_DATA1_REG (line 311)
# holds KEY_PURPOSE_0/1 (lines 422-432), EFUSE_RD_REPEAT_DATA2_REG (437) KEY_PURPOSE_2..5
# (441-465); the same bits as components/efuse/esp32s3/esp_efuse_table.csv lines 154-159.
EFUSE_BASE = 0x60007000
EFUSE_RD_REPEAT_DATA1 = EFUSE_BASE + 0x34  # KEY_PURPOSE_0 [27:24], KEY_PURPOSE_1 [31:28]
EFUSE_RD_REPEAT_DATA2 = EFUSE_BASE + 0x38  # KEY_PURPOSE_2..5 at [3:0] [7:4] [11:8] [15:12]
PURPOSE_HMAC_UP = 8
KEY_BLOCKS = 6

BUSY_POLLS = 100000
MASK32 = 0xFFFFFFFF

_configured_block = None


def key_purposes(read_word):
    """The six efuse KEY_PURPOSE values (KEY0..KEY5); read_word(addr) reads a 32-bit register."""
    w1 = read_word(EFUSE_RD_REPEAT_DATA1)
    w2 = read_word(EFUSE_RD_REPEAT_DATA2)
    return [(w1 >> 24) & 0xF, (w1 >> 28) & 0xF] + [(w2 >> (4 * i)) & 0xF for i in range(4)]


class HmacError(OSError):
    pass


def configure(key_block):
    """Use this efuse key block (0..5) instead of scanning for the HMAC_UP purpose."""
    global _configured_block
    if key_block is not None and not 0 <= key_block < KEY_BLOCKS:
        raise ValueError("key block must be 0..5")
    _configured_block = key_block


def pad(msg):
    """The message with SHA-256 padding as the peripheral wants it (length counts K0^ipad)."""
    n = len(msg)
    total = n + 9
    total += (-total) % 64
    out = bytearray(total)
    out[:n] = msg
    out[n] = 0x80
    bits = (64 + n) * 8
    for i in range(8):
        out[total - 1 - i] = (bits >> (8 * i)) & 0xFF
    return out


class Hmac:
    def __init__(self, mem32, busy_polls=BUSY_POLLS):
        self.mem = mem32
        self.busy_polls = busy_polls

    def _rd(self, addr):
        return self.mem[addr] & MASK32

    def _wr(self, addr, value):
        self.mem[addr] = value & MASK32

    def key_purposes(self):
        return key_purposes(self._rd)

    def find_key_block(self):
        p = self.key_purposes()
        for i in range(KEY_BLOCKS):
            if p[i] == PURPOSE_HMAC_UP:
                return i
        return None

    def _wait_idle(self):
        for _ in range(self.busy_polls):
            if not self._rd(QUERY_BUSY):
                return
        raise HmacError("HMAC peripheral stays busy")

    def _block(self, buf, off):
        self._wait_idle()
        for i in range(16):
            j = off + 4 * i
            self._wr(WR_MESSAGE + 4 * i, buf[j] | (buf[j + 1] << 8) | (buf[j + 2] << 16) | (buf[j + 3] << 24))
        self._wr(SET_MESSAGE_ONE, 1)

    def _signal(self, reg):
        self._wait_idle()
        self._wr(reg, 1)

    def hmac_sha256(self, msg, key_block=None, hw_pad=False):
        """HMAC-SHA256(efuse key, msg) as 32 bytes. hw_pad: let the hardware pad a message that
        is a whole number of blocks (SET_MESSAGE_END) instead of padding in software."""
        if key_block is None:
            key_block = _configured_block
        if key_block is None:
            key_block = self.find_key_block()
            if key_block is None:
                raise HmacError("no efuse key block with purpose HMAC_UP")
        clk = self._rd(PERIP_CLK_EN1)
        rst = self._rd(PERIP_RST_EN1)
        self._wr(PERIP_CLK_EN1, clk | CRYPTO_BITS)
        self._wr(PERIP_RST_EN1, rst | CRYPTO_BITS)   # reset pulse, as ESP-IDF's enable does
        self._wr(PERIP_RST_EN1, rst & ~CRYPTO_BITS)
        try:
            return self._run(bytes(msg), key_block, hw_pad)
        finally:
            c = self._rd(PERIP_CLK_EN1)
            r = self._rd(PERIP_RST_EN1)
            self._wr(PERIP_RST_EN1, (r & ~CRYPTO_BITS) | (rst & CRYPTO_BITS))
            self._wr(PERIP_CLK_EN1, (c & ~CRYPTO_BITS) | (clk & CRYPTO_BITS))

    def _run(self, msg, key_block, hw_pad):
        self._signal(SET_START)
        self._wait_idle()
        self._wr(SET_PARA_PURPOSE, PURPOSE_HMAC_UP)
        self._wr(SET_PARA_KEY, key_block)
        self._wr(SET_PARA_FINISH, 1)
        self._wait_idle()
        if self._rd(QUERY_ERROR):
            self._wr(SET_RESULT_FINISH, RESULT_END)
            raise HmacError("efuse key block %d is not an HMAC_UP key" % key_block)
        n = len(msg)
        if hw_pad and n and n % 64 == 0:
            blocks = n // 64
            for i in range(blocks):
                self._block(msg, 64 * i)
                self._signal(SET_MESSAGE_ING if i < blocks - 1 else SET_MESSAGE_END)
        else:
            buf = pad(msg)
            blocks = len(buf) // 64
            for i in range(blocks):
                self._block(buf, 64 * i)
                if blocks == 1:
                    self._signal(ONE_BLOCK)
                elif i < blocks - 2:
                    self._signal(SET_MESSAGE_ING)
                elif i == blocks - 2:
                    self._signal(SET_MESSAGE_PAD)
        self._wait_idle()
        out = bytearray(32)
        for i in range(8):
            w = self._rd(RD_RESULT + 4 * i)
            for j in range(4):
                out[4 * i + j] = (w >> (8 * j)) & 0xFF
        self._wr(SET_RESULT_FINISH, RESULT_END)
        return bytes(out)


def hmac_sha256(msg, key_block=None, mem32=None):
    """HMAC-SHA256 under the chip's efuse HMAC_UP key (esp32s3.Board.hmac_sha256 calls this)."""
    if mem32 is None:
        import machine
        mem32 = machine.mem32
    return Hmac(mem32).hmac_sha256(msg, key_block)
