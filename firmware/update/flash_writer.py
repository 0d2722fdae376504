# Flash writer stage: erase lazily just ahead of the write position, each region once; program
# every byte once; read back what landed; scrub the target after a failure.
#
# How the esp32 port erases (MicroPython ports/esp32/esp32_partition.c):
# - ioctl(6, n) (MP_BLOCKDEV_IOCTL_BLOCK_ERASE) erases the 4 KiB at n * 4096, and only on an
#   object whose block_size is exactly 4096; otherwise it returns -MP_EINVAL (-22) and erases
#   nothing. block_size is a uint16_t, so Partition(label, 65536) even has block size 0.
# - writeblocks(n, buf) (3 arguments, block_size >= 4096) calls
#   esp_partition_erase_range(offset, len(buf)), then writes buf. ESP-IDF's
#   esp_flash_erase_region (components/spi_flash/esp_flash_api.c) erases each whole, aligned
#   64 KiB block of that range with one block erase, the rest sector by sector.
# - writeblocks(n, buf, offset) (4 arguments) only writes.
# So a whole 64 KiB block goes through the 3-argument writeblocks: one block erase. It is either
# a 64 KiB chunk itself, or smaller chunks gathered in a 64 KiB `stage` buffer (a retry after a
# dropped connection continues filling it; a reset loses only what was staged). Everything else
# -- the image's tail, or every chunk when there is no room for a stage -- is erased with
# ioctl(6) sector by sector, then written with 4 arguments. RAM buys erase time: block erases
# (typ. 150 ms per 64 KiB) need 64 KiB, sector erases (16 x 45 ms per 64 KiB) nothing extra.
# Every ioctl return value is checked.
import hashlib

from firmware import log
from firmware.update.errors import E_FLASH, UpdateError

SECTOR = 4096
BLOCK = 65536

_log = log.get("updater")


class FlashWriter:
    def __init__(self, part, stage=None):
        self.part = part   # the target, block size 4096 (as get_next_update() makes it)
        self.pos = 0       # bytes programmed, from the partition start
        self.erased = 0    # erase frontier
        self.fill = 0      # bytes staged after pos
        self._stage = None if stage is None else memoryview(stage)  # 64 KiB, or None

    def resume(self, pos):
        """Flash up to `pos` was written before a reset. Whatever lies beyond was maybe half
        written: it is erased again."""
        self.pos = self.erased = pos
        self.fill = 0

    def write(self, off, data):
        """The stream's bytes at `off`, in order; those already on flash are not written again.
        With a stage, they may stay in RAM until their block is whole (see flush())."""
        end = off + len(data)
        if end <= self.pos:
            return
        if off < self.pos:
            data = memoryview(data)[self.pos - off:]
            off = self.pos
        try:
            if self.erased <= off and off % BLOCK == 0 and len(data) == BLOCK:
                self.part.writeblocks(off >> 12, data)  # erases the 64 KiB block, then writes
                self.erased = self.pos = end
            elif self._stage is not None and self.pos % BLOCK == 0 and self.erased <= self.pos:
                self._gather(off, data)
            else:
                self._program(off, data)
        except OSError as e:
            raise UpdateError(E_FLASH, "flash write failed at 0x%x: %s" % (off, e))

    def _gather(self, off, data):
        o = off - self.pos
        if o != self.fill:
            raise UpdateError(E_FLASH, "flash write at 0x%x skips staged bytes" % off)
        n = len(data)
        take = BLOCK - o if n > BLOCK - o else n
        self._stage[o:o + take] = data if take == n else memoryview(data)[:take]
        self.fill = o + take
        if self.fill == BLOCK:  # a whole block: one erase, one program
            self.part.writeblocks(self.pos >> 12, self._stage)
            self.erased = self.pos = self.pos + BLOCK
            self.fill = 0
        if take < n:
            self.write(off + take, memoryview(data)[take:])

    def _program(self, off, data):
        end = off + len(data)
        part = self.part
        e = self.erased
        while e < end:  # sector erases just ahead of the write (inline: this runs per chunk)
            try:
                r = part.ioctl(6, e >> 12)
            except OSError as err:
                raise UpdateError(E_FLASH, "flash erase failed at 0x%x: %s" % (e, err))
            if r:
                raise UpdateError(E_FLASH, "flash erase failed at 0x%x: ioctl returned %s" % (e, r))
            e += SECTOR
            self.erased = e
        part.writeblocks(off >> 12, data, off & 4095)
        self.pos = end

    def flush(self):
        """The end of the stream: a partially staged block (the image's tail) goes out in
        sectors."""
        n = self.fill
        if n:
            self.fill = 0
            try:
                self._program(self.pos, self._stage[:n])
            except OSError as e:
                raise UpdateError(E_FLASH, "flash write failed at 0x%x: %s" % (self.pos, e))

    def read(self, off, buf):
        try:
            self.part.readblocks(off >> 12, buf, off & 4095)
        except OSError as e:
            raise UpdateError(E_FLASH, "flash read failed at 0x%x: %s" % (off, e))

    def verify(self, end, buf, md5):
        """Read [0, end) back through `buf`; its md5 must be `md5` (the stream's)."""
        mv = memoryview(buf)
        chunk = len(buf)
        h = hashlib.md5()
        off = 0
        while off < end:
            n = end - off
            data = buf if n >= chunk else mv[:n]
            self.read(off, data)
            h.update(data)
            off += len(data)
        if h.digest() != md5:
            raise UpdateError(E_FLASH, "flash read-back does not match the download")

    def scrub(self):
        """After a final failure: erase the first sector so nothing in the target can boot. A
        partial image could not boot anyway (the bootloader verifies its SHA-256), but a whole
        one that failed *our* checks would, and the bootloader falls back to any verifying slot."""
        if self.erased or self.pos:
            self.scrub_now()

    def scrub_now(self):
        try:
            r = self.part.ioctl(6, 0)
        except OSError as e:
            r = e
        if r:
            _log.warning("could not erase the failed image's first sector: %s", r)
