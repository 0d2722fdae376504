"""ESP-IDF partition tables on the host: CSV <-> the binary the bootloader reads at 0x8000.

Binary format (ESP-IDF gen_esp32part): 32-byte entries `<2sBBII16sI` (magic AA 50, type,
subtype, offset, size, label, flags), then an MD5 entry (EB EB, 14 x FF, md5 of the entries
before it), padded with FF to 0xC00 bytes.

    python tools/partition_table.py tools/board/partitions-esp-box-3-ota.csv out.bin
    python tools/partition_table.py out.bin            # prints the table as CSV
"""
import hashlib
import struct
import sys

TABLE_OFFSET = 0x8000
TABLE_SIZE = 0xC00
ENTRY = struct.Struct("<2sBBII16sI")
MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb" + b"\xff" * 14
FLASH_SECTOR = 0x1000
APP_ALIGN = 0x10000

TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {
    0x00: {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)}},
    0x01: {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
           "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
           "littlefs": 0x83},
}
FLAGS = {"encrypted": 1, "readonly": 2}


class TableError(ValueError):
    pass


def _num(text):
    text = text.strip().upper()
    for suffix, mult in (("K", 1024), ("M", 1024 * 1024)):
        if text.endswith(suffix):
            return int(text[:-1], 0) * mult
    return int(text, 0)


def parse_csv(text):
    """Rows of (label, type, subtype, offset, size, flags) with numbers resolved."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        cols += [""] * (6 - len(cols))
        label, ptype, subtype, offset, size, flags = cols[:6]
        if ptype not in TYPES:
            raise TableError("line %d: unknown type %r" % (lineno, ptype))
        t = TYPES[ptype]
        st = SUBTYPES[t].get(subtype)
        if st is None:
            try:
                st = _num(subtype)
            except ValueError:
                raise TableError("line %d: unknown subtype %r" % (lineno, subtype))
        if not offset:
            raise TableError("line %d: offset is required" % lineno)
        f = 0
        for name in filter(None, (x.strip() for x in flags.split(":"))):
            f |= FLAGS[name]
        rows.append((label, t, st, _num(offset), _num(size), f))
    validate(rows)
    return rows


def validate(rows, flash_size=None):
    end_of_table = TABLE_OFFSET + TABLE_SIZE
    prev_end = end_of_table
    for label, t, st, offset, size, _ in sorted(rows, key=lambda r: r[3]):
        if len(label.encode()) > 16:
            raise TableError("%s: label longer than 16 bytes" % label)
        if offset < prev_end:
            raise TableError("%s at 0x%x overlaps the previous partition or the table" % (label, offset))
        align = APP_ALIGN if t == 0 else FLASH_SECTOR
        if offset % align or size % FLASH_SECTOR:
            raise TableError("%s: offset 0x%x / size 0x%x not aligned" % (label, offset, size))
        prev_end = offset + size
        if flash_size and prev_end > flash_size:
            raise TableError("%s ends at 0x%x, past the %d-byte flash" % (label, prev_end, flash_size))
    return rows


def to_binary(rows):
    body = b"".join(ENTRY.pack(MAGIC, t, st, off, size, label.encode(), flags)
                    for label, t, st, off, size, flags in rows)
    body += MD5_MAGIC + hashlib.md5(body).digest()
    if len(body) > TABLE_SIZE:
        raise TableError("too many partitions")
    return body + b"\xff" * (TABLE_SIZE - len(body))


def from_binary(blob):
    rows = []
    for pos in range(0, len(blob) - ENTRY.size + 1, ENTRY.size):
        chunk = blob[pos:pos + ENTRY.size]
        if chunk[:2] == MD5_MAGIC[:2]:
            if chunk[16:] != hashlib.md5(blob[:pos]).digest():
                raise TableError("MD5 entry does not match the table")
            return rows
        if chunk[:2] != MAGIC:
            break
        magic, t, st, off, size, label, flags = ENTRY.unpack(chunk)
        rows.append((label.rstrip(b"\x00").decode(), t, st, off, size, flags))
    raise TableError("no MD5 entry: table corrupt or truncated")


def to_csv(rows):
    names = {t: {v: k for k, v in SUBTYPES[t].items()} for t in SUBTYPES}
    tnames = {v: k for k, v in TYPES.items()}
    lines = ["# Name, Type, SubType, Offset, Size, Flags"]
    for label, t, st, off, size, flags in rows:
        fl = ":".join(k for k, v in FLAGS.items() if flags & v)
        lines.append("%s, %s, %s, 0x%x, 0x%x, %s" % (label, tnames.get(t, t), names.get(t, {}).get(st, hex(st)),
                                                   off, size, fl))
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) == 3:
        with open(argv[1]) as f:
            rows = parse_csv(f.read())
        with open(argv[2], "wb") as f:
            f.write(to_binary(rows))
    elif len(argv) == 2:
        with open(argv[1], "rb") as f:
            sys.stdout.write(to_csv(from_binary(f.read())))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
