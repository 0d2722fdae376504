# Programs an image into an esp32.Partition (block size 4096) with erases the MicroPython port
# really performs (ports/esp32/esp32_partition.c, v1.24 .. v1.28):
#
# - ioctl(6, n) erases only on a block_size-4096 object; any other block size returns -EINVAL
#   and erases nothing (and block_size is a uint16_t: 65536 is 0). So the only call that gives
#   a 64 KiB *block* erase is the 3-argument writeblocks(n, buf) with a 64 KiB buffer: it runs
#   esp_partition_erase_range(n * 4096, 65536), which ESP-IDF's esp_flash_erase_region does as
#   one block erase when aligned, then programs the buffer.
# - So image bytes are staged per 64 KiB block in one reused 64 KiB buffer; a full block goes out
#   as that one call. The last, partial block is erased sector by sector with ioctl(6) (return
#   value checked) and programmed with writeblocks(n, buf, offset), which does not erase.
#
# Every region is erased exactly once, right before it is programmed, and never more than the
# image needs. RAM: the 64 KiB stage (on the ESP-BOX-3 it lands in PSRAM: the port's split heap
# grows through the IDF allocator, which serves large blocks from SPIRAM).
SECTOR = 4096
BLOCK = 65536


class BlockWriter:
    def __init__(self, part):
        self.part = part
        self.stage = bytearray(BLOCK)
        self.base = 0      # partition offset of the staged block
        self.fill = 0      # bytes staged from base
        self.touched = False  # anything erased or programmed

    def staged_end(self):
        """Partition offset up to which bytes are programmed or staged (a retry continues there:
        the stage survives a dropped connection, only a reset loses it)."""
        return self.base + self.fill

    def reset(self):
        """Start over from offset 0 (what is staged is dropped)."""
        self.base = 0
        self.fill = 0

    def write(self, off, data):
        """Stage `data` for partition offset `off`; return True when that completed (erased and
        programmed) its 64 KiB block. A block may be restaged from its start (a retry); data
        must not skip ahead of what is staged, nor cross a block boundary."""
        n = len(data)
        base = off - off % BLOCK
        o = off - base
        if base != self.base:
            if o:
                raise OSError("flash write at 0x%x skips the start of its block" % off)
            self.base = base
            self.fill = 0
        if o > self.fill or o + n > BLOCK:
            raise OSError("flash write at 0x%x not contiguous within its block" % off)
        self.stage[o:o + n] = data
        self.fill = o + n
        if self.fill < BLOCK:
            return False
        self.touched = True
        self.part.writeblocks(base // SECTOR, self.stage)  # erase 64 KiB, then program
        self.base = base + BLOCK
        self.fill = 0
        return True

    def finish(self):
        """Write the staged partial block (the image's tail): sector erases, then a program."""
        n = self.fill
        if not n:
            return
        self.touched = True
        first = self.base // SECTOR
        for s in range((n + SECTOR - 1) // SECTOR):
            r = self.part.ioctl(6, first + s)
            if r != 0:
                raise OSError("sector erase at 0x%x returned %r" % ((first + s) * SECTOR, r))
        self.part.writeblocks(first, memoryview(self.stage)[:n], 0)
        self.base += n
        self.fill = 0
