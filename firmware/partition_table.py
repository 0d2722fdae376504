# Parse the ESP-IDF binary partition table (the bootloader's view of the flash layout).
# Entries are 32 bytes `<2sBBII16sI`; an MD5 entry (EB EB ...) over the entries ends the table.
import hashlib
import struct

OFFSET = 0x8000
MAX_LEN = 0xC00
_ENTRY = "<2sBBII16sI"
TYPE_APP = 0
TYPE_DATA = 1
SUBTYPE_OTA_DATA = 0
SUBTYPE_OTA_0 = 0x10


class TableError(ValueError):
    pass


def parse(blob):
    """Return [(type, subtype, address, size, label, encrypted)] like esp32.Partition.info()."""
    rows = []
    for pos in range(0, len(blob) - 31, 32):
        magic = blob[pos:pos + 2]
        if magic == b"\xeb\xeb":
            if hashlib.md5(blob[:pos]).digest() != bytes(blob[pos + 16:pos + 32]):
                raise TableError("partition table MD5 mismatch")
            return rows
        if magic != b"\xaa\x50":
            break
        _, ptype, subtype, addr, size, label, flags = struct.unpack_from(_ENTRY, blob, pos)
        end = label.find(b"\x00")
        label = (label if end < 0 else label[:end]).decode()
        rows.append((ptype, subtype, addr, size, label, bool(flags & 1)))
    raise TableError("partition table has no MD5 entry")
