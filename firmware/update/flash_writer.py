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
# So a full 64 KiB chunk starting on a block boundary goes through the 3-argument writeblocks:
# one block erase, and the chunk itself is the buffer. Everything else is erased with ioctl(6)
# sector by sector, then written with 4 arguments. The chunk size picks the erase unit: 64 KiB
# chunks (64 KiB of RAM) give block erases (typ. 150 ms per 64 KiB), 4 KiB chunks sector erases
# (16 x 45 ms per 64 KiB). Every ioctl return value is checked.
import hashlib

from firmware import log
from firmware.update.errors import E_FLASH, UpdateError

SECTOR = 4096
BLOCK = 65536

_log = log.get("updater")


class FlashWriter:
    def __init__(self, part):
        self.part = part   # the target, block size 4096 (as get_next_update() makes it)
        self.pos = 0       # bytes programmed, from the partition start
        self.erased = 0    # erase frontier

    def resume(self, pos):
        """Flash up to `pos` was written before a reset. Whatever lies beyond was maybe half
        written: it is erased again."""
        self.pos = self.erased = pos

    def write(self, off, data):
        """The stream's bytes at `off`, in order; those already on flash are not written again."""
        end = off + len(data)
        if end <= self.pos:
            return
        if off < self.pos:
            data = memoryview(data)[self.pos - off:]
            off = self.pos
        part = self.part
        try:
            if self.erased <= off and off % BLOCK == 0 and len(data) == BLOCK:
                part.writeblocks(off >> 12, data)  # erases the 64 KiB block, then writes
                self.erased = end
            else:
                while self.erased < end:
                    self._erase_sector()
                part.writeblocks(off >> 12, data, off & 4095)
        except OSError as e:
            raise UpdateError(E_FLASH, "flash write failed at 0x%x: %s" % (off, e))
        self.pos = end

    def _erase_sector(self):
        e = self.erased
        try:
            r = self.part.ioctl(6, e >> 12)
        except OSError as err:
            raise UpdateError(E_FLASH, "flash erase failed at 0x%x: %s" % (e, err))
        if r:
            raise UpdateError(E_FLASH, "flash erase failed at 0x%x: ioctl returned %s" % (e, r))
        self.erased = e + SECTOR

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
        if not (self.erased or self.pos):
            return
        try:
            r = self.part.ioctl(6, 0)
        except OSError as e:
            r = e
        if r:
            _log.warning("could not erase the failed image's first sector: %s", r)
