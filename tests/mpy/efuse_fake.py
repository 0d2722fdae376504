# The ESP32-S3 eFuse read registers (mem32-like), laid out from ESP-IDF's own tables rather than
# from the driver's constants, so a wrong address or bit position in the driver reads wrong data.
# Runs under MicroPython (and CPython).
#
# Block start addresses: components/efuse/esp32s3/esp_efuse_utility.c, range_read_addr_blocks[]
# (lines 22-34: BLK0 starts at EFUSE_RD_WR_DIS_REG, BLK1 at EFUSE_RD_MAC_SPI_SYS_0_REG, BLK3 at
# EFUSE_RD_USR_DATA0_REG), with components/soc/esp32s3/register/soc/efuse_reg.h
# (EFUSE_RD_WR_DIS_REG = base + 0x2c, line 149; EFUSE_RD_MAC_SPI_SYS_0_REG = base + 0x44, line 677;
# EFUSE_RD_USR_DATA0_REG = base + 0x7c, line 1194) and DR_REG_EFUSE_BASE = 0x60007000
# (components/soc/esp32s3/register/soc/reg_base.h, line 13).
#
# Fields: (block, first bit, bit count) from components/efuse/esp32s3/esp_efuse_table.csv; bit n
# of a block is bit n % 32 of its word n // 32, as esp_efuse_utility reads them.

EFUSE_BASE = 0x60007000
BLOCK_START = {0: EFUSE_BASE + 0x2C, 1: EFUSE_BASE + 0x44, 3: EFUSE_BASE + 0x7C}
BLOCK_WORDS = {0: 6, 1: 6, 3: 8}

FIELDS = {
    "KEY_PURPOSE_0": (0, 88, 4),                # esp_efuse_table.csv line 154
    "KEY_PURPOSE_1": (0, 92, 4),                # 155
    "KEY_PURPOSE_2": (0, 96, 4),                # 156
    "KEY_PURPOSE_3": (0, 100, 4),               # 157
    "KEY_PURPOSE_4": (0, 104, 4),               # 158
    "KEY_PURPOSE_5": (0, 108, 4),               # 159
    "DISABLE_WAFER_VERSION_MAJOR": (0, 160, 1),  # 181
    "WAFER_VERSION_MINOR_LO": (1, 114, 3),      # 200
    "WAFER_VERSION_MINOR_HI": (1, 183, 1),      # 215
    "WAFER_VERSION_MAJOR": (1, 184, 2),         # 216
    "USER_DATA": (3, 0, 256),                   # 237
}


class Efuse:
    def __init__(self):
        self.words = {}
        self.reads = []

    def set(self, field, value):
        """Burn `value` (an int, or bytes for USER_DATA: byte i = bits 8i..8i+7) into a field."""
        block, first, count = FIELDS[field]
        if isinstance(value, (bytes, bytearray)):
            value = int.from_bytes(bytes(value), "little")
        for i in range(count):
            bit = first + i
            addr = BLOCK_START[block] + 4 * (bit // 32)
            w = self.words.get(addr, 0)
            if (value >> i) & 1:
                w |= 1 << (bit % 32)
            else:
                w &= ~(1 << (bit % 32)) & 0xFFFFFFFF
            self.words[addr] = w

    def set_revision(self, major, minor):
        self.set("WAFER_VERSION_MAJOR", major)
        self.set("WAFER_VERSION_MINOR_HI", minor >> 3)
        self.set("WAFER_VERSION_MINOR_LO", minor & 7)

    def covers(self, addr):
        for block, start in BLOCK_START.items():
            if start <= addr < start + 4 * BLOCK_WORDS[block]:
                return True
        return False

    def __getitem__(self, addr):
        if not self.covers(addr) or addr % 4:
            raise KeyError("read of an unmodelled eFuse address 0x%08x" % addr)
        self.reads.append(addr)
        return self.words.get(addr, 0)
