# The otadata partition as ESP-IDF's bootloader and esp_ota_ops keep it (used by the simulated
# board; the real board has the ROM bootloader and ESP-IDF do this).
#
# Two 4 KiB sectors, each starting with an esp_ota_select_entry_t:
#   uint32 ota_seq; uint8 seq_label[20]; uint32 ota_state; uint32 crc   (crc32 of ota_seq only)
# The valid entry with the highest seq wins; it boots slot (seq - 1) % number_of_ota_slots.
import binascii
import struct

SECTOR = 4096
_FMT = "<I20sII"
ENTRY_LEN = 32

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF

STATE_NAMES = {NEW: "new", PENDING_VERIFY: "pending-verify", VALID: "valid", INVALID: "invalid",
               ABORTED: "aborted", UNDEFINED: "undefined"}


def crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF)


class Entry:
    def __init__(self, seq, state, crc_value):
        self.seq = seq
        self.state = state
        self.crc = crc_value

    def invalid(self):
        """ESP-IDF bootloader_common_ota_select_invalid (bootloader_common_loader.c): blank, or
        marked invalid/aborted. No CRC check here."""
        return self.seq == 0xFFFFFFFF or self.state == INVALID or self.state == ABORTED

    def valid(self):
        """ESP-IDF bootloader_common_ota_select_valid: not invalid and the CRC matches. Both the
        bootloader and esp_ota_ops pick the active entry among these."""
        return not self.invalid() and self.crc == crc(self.seq)

    def initial(self):
        """Blank or CRC-damaged, the bootloader's test for "otadata in initial state"
        (bootloader_utility.c, bootloader_utility_get_selected_boot_partition)."""
        return self.seq == 0xFFFFFFFF or self.crc != crc(self.seq)


class OtaData:
    """otadata at `base` on a NorFlash-like object (read/erase/program)."""

    def __init__(self, flash, base):
        self.flash = flash
        self.base = base

    def entries(self):
        buf = bytearray(ENTRY_LEN)
        out = []
        for i in (0, 1):
            self.flash.read(self.base + i * SECTOR, buf)
            seq, _, state, c = struct.unpack(_FMT, buf)
            out.append(Entry(seq, state, c))
        return out

    def write(self, index, seq, state):
        """Rewrite one sector (erase + program), as esp_ota_ops rewrite_ota_seq does."""
        addr = self.base + index * SECTOR
        self.flash.erase(addr, SECTOR)
        self.flash.program(addr, struct.pack(_FMT, seq, b"\xff" * 20, state, crc(seq)))

    def active(self):
        """Index (0/1) of the entry in force, or -1 when neither is valid
        (bootloader_common_get_active_otadata -> bootloader_common_select_otadata, max seq;
        on equal seqs entry 0 wins)."""
        e = self.entries()
        v0 = e[0].valid()
        v1 = e[1].valid()
        if v0 and v1:
            return 0 if e[0].seq >= e[1].seq else 1
        return 0 if v0 else (1 if v1 else -1)

    def set_boot(self, slot, slot_count, state=NEW):
        """esp_ota_set_boot_partition -> esp_rewrite_ota_data (esp_ota_ops.c lines 778-811): an
        entry for `slot` with state NEW, or UNDEFINED in a build without
        CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (set_new_state_otadata). The entry in force is
        the newest one neither INVALID nor ABORTED (bootloader_common_get_active_otadata)."""
        entries = self.entries()
        act = self.active()
        if act < 0:
            self.write(0, slot + 1, state)
            return
        seq = entries[act].seq
        if (seq - 1) % slot_count == slot:  # it already selects the slot: only the state
            self.write(act, seq, state)
            return
        i = 0
        while seq > (slot + 1) % slot_count + i * slot_count:
            i += 1
        self.write(act ^ 1, (slot + 1) % slot_count + i * slot_count, state)

    def running_state(self, slot_count, running_slot):
        """State name of the entry in force when it selects `running_slot`, else "none" (the
        bootloader started the slot without otadata choosing it, e.g. blank otadata)."""
        act = self.active()
        if act < 0:
            return "none"
        e = self.entries()[act]
        if (e.seq - 1) % slot_count != running_slot:
            return "none"
        return STATE_NAMES.get(e.state, "?")


class PartitionReader:
    """Read-only NorFlash-like view of an esp32.Partition (addresses relative to its start), so
    the real board can read otadata through the MicroPython API."""

    def __init__(self, partition):
        self.partition = partition

    def read(self, addr, buf):
        self.partition.readblocks(0, buf, addr)
