# File-backed NOR flash for the simulated board.
#
# Behaves like the SPI flash chip on the ESP-BOX-3 behind ESP-IDF's esp_flash driver: erase
# works on 4 KiB sectors or 64 KiB blocks and sets every bit to 1; programming can only clear
# bits, so writing over unerased data leaves old AND new (and is counted as a conflict). Every
# operation is counted, so tests and the benchmark can measure erase and program work. Writes go straight to the file:
# killing the process at any point leaves exactly what a power cut would.

SECTOR = 4096
BLOCK = 65536
_FF = b"\xff" * SECTOR


class FlashError(OSError):
    pass


class NorFlash:
    def __init__(self, path):
        self._f = open(path, "r+b")
        self._f.seek(0, 2)
        self.size = self._f.tell()
        self._old = bytearray(SECTOR)
        self.reset_counters()

    def reset_counters(self):
        self.erase_4k = 0
        self.erase_64k = 0
        self.programmed_bytes = 0
        self.program_ops = 0
        self.conflicts = 0      # bytes programmed over data that needed an erase first

    def counters(self):
        return {"erase_4k": self.erase_4k, "erase_64k": self.erase_64k,
                "programmed_bytes": self.programmed_bytes, "program_ops": self.program_ops,
                "conflicts": self.conflicts}

    def _check_range(self, addr, n):
        if addr < 0 or n < 0 or addr + n > self.size:
            raise FlashError("flash access 0x%x+%d out of range" % (addr, n))

    def read(self, addr, buf):
        n = len(buf)
        self._check_range(addr, n)
        self._f.seek(addr)
        got = self._f.readinto(buf)
        if got != n:
            raise FlashError("short read at 0x%x" % addr)

    def erase(self, addr, size):
        """Erase [addr, addr+size) as ESP-IDF v5.4 esp_flash_erase_region does
        (spi_flash/esp_flash_api.c:667-681): a 64 KiB block erase while the address is block
        aligned and a whole block remains (generic chip driver: block_erase_size 64 KiB,
        sector_size 4 KiB, spi_flash_chip_generic.c:668), else one 4 KiB sector erase."""
        if addr % SECTOR or size % SECTOR:
            raise FlashError("erase 0x%x+0x%x not sector aligned" % (addr, size))
        self._check_range(addr, size)
        end = addr + size
        f = self._f
        while addr < end:
            if addr % BLOCK == 0 and end - addr >= BLOCK:
                step = BLOCK
                self.erase_64k += 1
            else:
                step = SECTOR
                self.erase_4k += 1
            f.seek(addr)
            for _ in range(step // SECTOR):
                f.write(_FF)
            addr += step

    def program(self, addr, data):
        """Program bytes. As on the chip (esp_flash_write sends page programs; NOR page program
        only turns 1 bits into 0, SPI NOR datasheets, e.g. W25Q128JV "Page Program"), the result
        is old AND new: programming over unerased data silently corrupts it, and ESP-IDF reports
        success (CONFIG_SPI_FLASH_VERIFY_WRITE is off by default, spi_flash/Kconfig). Each byte
        that wanted a 0 -> 1 is counted in `conflicts`, so tests can tell."""
        n = len(data)
        self._check_range(addr, n)
        if n <= SECTOR:
            self._program(addr, data)  # no memoryview: a chunk-sized program allocates nothing
        else:
            mv = memoryview(data)
            pos = 0
            while pos < n:
                step = min(SECTOR, n - pos)
                self._program(addr + pos, mv[pos:pos + step])
                pos += step
        self.programmed_bytes += n
        self.program_ops += 1

    def _program(self, addr, piece):
        n = len(piece)
        old = self._old if n == SECTOR else memoryview(self._old)[:n]
        f = self._f
        f.seek(addr)
        f.readinto(old)
        f.seek(addr)
        if (old == _FF) if n == SECTOR else (bytes(old) == _FF[:n]):
            f.write(piece)
            return
        # Slow path: the target is not blank: the cells keep every 0 they already hold.
        for i in range(n):
            p = piece[i]
            o = old[i]
            if p & ~o & 0xFF:
                self.conflicts += 1
            old[i] = o & p
        f.write(old)

    def close(self):
        self._f.close()
