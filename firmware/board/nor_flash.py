# File-backed NOR flash for the simulated board.
#
# Behaves like the SPI flash chip on the ESP-BOX-3: erase works on 4 KiB sectors or 64 KiB
# blocks and sets every bit to 1; programming can only clear bits, so writing a 1 over a 0 is
# refused (FlashError) instead of silently corrupting data. Every operation is counted, so
# tests and the benchmark can measure erase and program work. Writes go straight to the file:
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

    def counters(self):
        return {"erase_4k": self.erase_4k, "erase_64k": self.erase_64k,
                "programmed_bytes": self.programmed_bytes, "program_ops": self.program_ops}

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
        """Erase [addr, addr+size): one 64 KiB block erase per aligned block, else 4 KiB sectors."""
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
        """Program bytes: only 1 -> 0 transitions are possible, as on real NOR flash."""
        n = len(data)
        self._check_range(addr, n)
        if n <= SECTOR:
            self._check_erased(addr, data)  # no memoryview: a chunk-sized program allocates nothing
        else:
            mv = memoryview(data)
            pos = 0
            while pos < n:
                step = min(SECTOR, n - pos)
                self._check_erased(addr + pos, mv[pos:pos + step])
                pos += step
        self._f.seek(addr)
        self._f.write(data)
        self.programmed_bytes += n
        self.program_ops += 1

    def _check_erased(self, addr, piece):
        n = len(piece)
        old = self._old if n == SECTOR else memoryview(self._old)[:n]
        self._f.seek(addr)
        self._f.readinto(old)
        if (old == _FF) if n == SECTOR else (bytes(old) == _FF[:n]):
            return
        # Slow path: the target is not blank; allowed only when no bit goes from 0 to 1.
        for i in range(n):
            if piece[i] & ~old[i] & 0xFF:
                raise FlashError("program at 0x%x would set bits (write over unerased flash)" % (addr + i))

    def close(self):
        self._f.close()
