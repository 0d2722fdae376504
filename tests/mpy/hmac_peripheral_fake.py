# A register-level model of the ESP32-S3 HMAC accelerator (upstream mode) plus the SYSTEM clock/
# reset and efuse key-purpose registers it depends on. Runs under MicroPython (and CPython).
#
# It behaves like the silicon as the TRM describes it: a real SHA-256 compression runs over
# K0^ipad and then exactly the blocks software writes (padding included, so wrong padding gives
# a wrong result), the outer hash follows, the key is used only when its efuse purpose matches.
# It is strict where the silicon is undefined: register use while unclocked or in reset, writes
# while busy, steps out of the TRM's order -> FakeViolation.
#
# SET_RESULT_FINISH (+0x5c): its one field is HMAC_SET_RESULT_END at bit 0 (ESP-IDF
# components/soc/esp32c5/register/soc/hmac_reg.h lines 110-116; esp32c6/esp32h2 the same). A write
# without bit 0 (ESP-IDF's hmac_ll_calc_finish writes 2, esp32s3 hmac_ll.h line 220) sets only a
# reserved bit: the result stays and the peripheral does not go back to idle, so the next START
# is refused -- unless the peripheral was reset in between, which is what ESP-IDF does on every
# enable (esp_crypto_periph_clk.c lines 119-127: hmac_ll_reset_register pulses SYSTEM_CRYPTO_HMAC_RST).
# Addresses: SYSTEM_PERIP_CLK_EN1_REG = 0x600C001C, SYSTEM_PERIP_RST_EN1_REG = 0x600C0024,
# CRYPTO_SHA/DS/HMAC at bits 2/4/5 (components/soc/esp32s3/register/soc/system_reg.h lines 299,
# 332-350, 561, 594-600). eFuse key purposes come from efuse_fake (built from ESP-IDF's table).
import hashlib

from efuse_fake import Efuse

HMAC_BASE = 0x6003E000
SYSTEM_CLK = 0x600C001C
SYSTEM_RST = 0x600C0024
BITS = (1 << 2) | (1 << 4) | (1 << 5)
HMAC_RST = 1 << 5

_K = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]
_H0 = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
M = 0xFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & M


def compress(state, block):
    w = [int.from_bytes(block[4 * i:4 * i + 4], "big") for i in range(16)]
    for i in range(16, 64):
        s0 = _rotr(w[i - 15], 7) ^ _rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
        s1 = _rotr(w[i - 2], 17) ^ _rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
        w.append((w[i - 16] + s0 + w[i - 7] + s1) & M)
    a, b, c, d, e, f, g, h = state
    for i in range(64):
        t1 = (h + (_rotr(e, 6) ^ _rotr(e, 11) ^ _rotr(e, 25)) + ((e & f) ^ (~e & g)) + _K[i] + w[i]) & M
        t2 = ((_rotr(a, 2) ^ _rotr(a, 13) ^ _rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & M
        h, g, f, e, d, c, b, a = g, f, e, (d + t1) & M, c, b, a, (t1 + t2) & M
    return [(x + y) & M for x, y in zip(state, (a, b, c, d, e, f, g, h))]


class FakeViolation(Exception):
    pass


class FakeChip:
    """mem32-like: chip[addr] / chip[addr] = value. keys: {block: 32 bytes}; purposes: 6 ints."""

    def __init__(self, keys, purposes, busy_reads=3, clk=0, rst=BITS):
        self.keys = keys
        self.purposes = list(purposes)
        self.efuse = Efuse()
        for i, p in enumerate(self.purposes):
            self.efuse.set("KEY_PURPOSE_%d" % i, p)
        self.resets = 0        # reset pulses of the HMAC block
        self.finish_values = []
        self.busy_reads = busy_reads
        self.regs = {SYSTEM_CLK: clk, SYSTEM_RST: rst}
        self.state = "idle"
        self.busy = 0
        self.error = 0
        self.words = [None] * 16
        self.sha = None
        self.nblocks = 0
        self.nbytes = 0
        self.key = None
        self.purpose = None
        self.key_block = None
        self.result = None
        self.log = []          # control steps, in order
        self.busy_polls = 0

    # -- helpers
    def _powered(self):
        return (self.regs[SYSTEM_CLK] & BITS) == BITS and not (self.regs[SYSTEM_RST] & BITS)

    def _need(self, *states):
        if self.state not in states:
            raise FakeViolation("step in state %s (expected %s): %s" % (self.state, states, self.log[-1]))

    def _start_block(self):
        if any(w is None for w in self.words):
            raise FakeViolation("SET_MESSAGE_ONE before all 16 message words were written")
        block = b"".join(w.to_bytes(4, "little") for w in self.words)
        self.words = [None] * 16
        self.sha = compress(self.sha, block)
        self.nblocks += 1
        self.nbytes += 64
        self.busy = self.busy_reads

    def _finish(self):
        inner = b"".join(x.to_bytes(4, "big") for x in self.sha)
        k0 = bytes(self.key) + bytes(32)
        self.result = hashlib.sha256(bytes(b ^ 0x5C for b in k0) + inner).digest()
        self.state = "done"
        self.busy = self.busy_reads

    # -- mem32 interface
    def __getitem__(self, addr):
        if self.efuse.covers(addr):
            return self.efuse[addr]
        if addr in (SYSTEM_CLK, SYSTEM_RST):
            return self.regs[addr]
        off = addr - HMAC_BASE
        if not 0 <= off < 0x100:
            raise FakeViolation("read of unmodelled address 0x%08x" % addr)
        if not self._powered():
            raise FakeViolation("HMAC read while unclocked or in reset")
        if off == 0x6C:  # QUERY_BUSY
            self.busy_polls += 1
            if self.busy:
                self.busy -= 1
                return 1
            return 0
        if off == 0x68:  # QUERY_ERROR
            return self.error
        if 0xC0 <= off < 0xE0:
            if self.state != "done" or self.busy:
                raise FakeViolation("result read before the calculation finished")
            i = (off - 0xC0) // 4
            return int.from_bytes(self.result[4 * i:4 * i + 4], "little")
        raise FakeViolation("read of write-only HMAC register +0x%x" % off)

    def __setitem__(self, addr, value):
        if addr in (SYSTEM_CLK, SYSTEM_RST):
            if addr == SYSTEM_RST and value & HMAC_RST and not self.regs[addr] & HMAC_RST:
                self.resets += 1
            self.regs[addr] = value & M
            if self.regs[SYSTEM_RST] & HMAC_RST:  # held in reset: the peripheral forgets all
                self.state = "idle"             # (a stopped clock only freezes it)
                self.busy = 0
                self.result = None
            return
        off = addr - HMAC_BASE
        if not 0 <= off < 0x100:
            raise FakeViolation("write of unmodelled address 0x%08x" % addr)
        if not self._powered():
            raise FakeViolation("HMAC write while unclocked or in reset")
        if self.busy:
            raise FakeViolation("HMAC write (+0x%x) while busy" % off)
        if 0x80 <= off < 0xC0:
            if self.state not in ("message", "last"):
                raise FakeViolation("message word written in state %s" % self.state)
            self.words[(off - 0x80) // 4] = value & M
            return
        name = {0x40: "START", 0x44: "PURPOSE", 0x48: "KEY", 0x4C: "PARA_FINISH", 0x50: "ONE",
                0x54: "ING", 0x58: "END", 0x5C: "RESULT_FINISH", 0xF0: "PAD", 0xF4: "ONE_BLOCK"}.get(off)
        if name is None:
            raise FakeViolation("write of unmodelled HMAC register +0x%x" % off)
        self.log.append(name)
        if name == "START":
            if self.state in ("done", "error"):
                raise FakeViolation("START while the last result was not released "
                                    "(SET_RESULT_FINISH bit 0, or a reset)")
            self._need("idle")
            self.state = "config"
            self.error = 0
        elif name == "PURPOSE":
            self._need("config")
            self.purpose = value
        elif name == "KEY":
            self._need("config")
            self.key_block = value
        elif name == "PARA_FINISH":
            self._need("config")
            kb = self.key_block
            ok = (self.purpose == 8 and kb is not None and 0 <= kb < 6 and self.purposes[kb] == 8
                  and kb in self.keys)
            if not ok:
                self.error = 1
                self.state = "error"
                return
            k0 = bytes(self.keys[kb]) + bytes(32)
            self.key = self.keys[kb]
            self.sha = compress(list(_H0), bytes(b ^ 0x36 for b in k0))
            self.nblocks = self.nbytes = 0
            self.state = "message"
            self.busy = self.busy_reads
        elif name == "ONE":
            self._need("message", "last")
            last = self.state == "last"
            self._start_block()
            self.state = "done_pending" if last else "after"
            if last:
                self._finish()
        elif name == "ING":
            self._need("after")
            self.state = "message"
        elif name == "PAD":
            self._need("after")
            self.state = "last"
        elif name == "ONE_BLOCK":
            self._need("after")
            if self.nblocks != 1:
                raise FakeViolation("ONE_BLOCK after %d blocks" % self.nblocks)
            self._finish()
        elif name == "END":  # hardware padding of a whole-block message
            self._need("after")
            n = self.nbytes  # message bytes (hardware counts K0^ipad on top)
            pad = b"\x80" + bytes(55) + ((64 + n) * 8).to_bytes(8, "big")
            self.sha = compress(self.sha, pad)
            self._finish()
        elif name == "RESULT_FINISH":
            self._need("done", "error")
            self.finish_values.append(value)
            if value & 1 == 0:  # only a reserved bit: upstream mode is not left
                return
            self.state = "idle"
            self.result = None
            self.error = 0
