# esp32.Partition for the simulated board, backed by NorFlash, the partition table and otadata.
#
# Same API and the same edge behaviour as MicroPython's esp32.Partition on ESP-IDF:
# writeblocks(n, buf) erases first, writeblocks(n, buf, offset) does not; ioctl(6, n) erases one
# block of `block_size` bytes (so a 65536 block size gives 64 KiB block erases); set_boot()
# refuses an image that does not verify, as esp_ota_set_boot_partition does.
from firmware import app_image, otadata, partition_table

_chip = None  # set by install(); one simulated chip per process, like the real esp32 module


class Chip:
    def __init__(self, flash, rollback=True):
        self.flash = flash
        self.rollback = rollback  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE of the simulated build
        table = bytearray(partition_table.MAX_LEN)
        flash.read(partition_table.OFFSET, table)
        self.table = partition_table.parse(table)
        od = [r for r in self.table
              if r[0] == partition_table.TYPE_DATA and r[1] == partition_table.SUBTYPE_OTA_DATA]
        self.otadata = otadata.OtaData(flash, od[0][2]) if od else None
        self.slots = sorted((r for r in self.table
                             if r[0] == partition_table.TYPE_APP and 0x10 <= r[1] < 0x20),
                            key=lambda r: r[1])
        self.running = None  # the info tuple the bootloader started


def install(chip):
    global _chip
    _chip = chip


def _need_chip():
    if _chip is None:
        raise OSError("simulated flash not installed")
    return _chip


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        chip = _need_chip()
        if isinstance(id, tuple):  # an info tuple from the table (used by find/get_next_update)
            info = id
        elif id == Partition.RUNNING:
            info = chip.running
        elif id == Partition.BOOT:
            info = _boot_slot(chip)
        else:
            info = None
            for row in chip.table:
                if row[4] == id:
                    info = row
        if info is None:
            raise ValueError("partition not found")
        self._info = info
        self._bs = block_size
        self._flash = _need_chip().flash

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=4096):
        out = []
        for row in _need_chip().table:
            if row[0] == type and (subtype == 0xFF or row[1] == subtype) and (label is None or row[4] == label):
                out.append(cls(row, block_size))
        return out

    def info(self):
        return self._info

    def __repr__(self):
        t, st, addr, size, label, enc = self._info
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=%d>" % (
            t, st, addr, size, label, enc)

    def _addr(self, block_num, offset, n):
        start = block_num * self._bs + offset
        if start < 0 or start + n > self._info[3]:
            raise OSError("access past the end of partition %s" % self._info[4])
        return self._info[2] + start

    def readblocks(self, block_num, buf, offset=0):
        self._flash.read(self._addr(block_num, offset, len(buf)), buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            addr = self._addr(block_num, 0, len(buf))
            self._flash.erase(addr, len(buf))
        else:
            addr = self._addr(block_num, offset, len(buf))
        self._flash.program(addr, buf)

    def ioctl(self, op, arg):
        if op in (1, 2, 3):
            return 0
        if op == 4:
            return self._info[3] // self._bs
        if op == 5:
            return self._bs
        if op == 6:
            self._flash.erase(self._addr(arg, 0, self._bs), self._bs)
            return 0
        return None

    def set_boot(self):
        chip = _need_chip()
        slot = _slot_index(chip, self._info)
        if slot < 0:
            raise OSError("set_boot: %s is not an OTA app partition" % self._info[4])
        if not _verifies(self):
            raise OSError("set_boot: image in %s does not verify" % self._info[4])
        # ESP-IDF components/app_update/esp_ota_ops.c set_new_state_otadata (lines 127-135)
        state = otadata.NEW if chip.rollback else otadata.UNDEFINED
        chip.otadata.set_boot(slot, len(chip.slots), state)

    def get_next_update(self):
        chip = _need_chip()
        slot = _slot_index(chip, self._info)
        if slot < 0 or len(chip.slots) < 2:
            raise OSError("no OTA update partition")
        return Partition(chip.slots[(slot + 1) % len(chip.slots)], self._bs)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        chip = _need_chip()
        od = chip.otadata
        # bootloader_common_get_active_otadata: the newest entry that is not INVALID/ABORTED
        # (bootloader_common_loader.c lines 72-91), so an aborted image is never revived
        act = od.active(bootable_only=True)
        if act >= 0:
            # esp_ota_ops.c esp_ota_current_ota_is_workable (line 1192): any state but VALID
            # becomes VALID, with or without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE
            e = od.entries()[act]
            if e.state != otadata.VALID:
                od.write(act, e.seq, otadata.VALID)
        return None


def _verifies(part):
    # Header, chip, checksum and SHA-256, as esp_image_verify checks before booting/switching.
    try:
        app_image.verify_image(part)
        return True
    except (app_image.ImageError, OSError):
        return False


def _slot_index(chip, info):
    for i, row in enumerate(chip.slots):
        if row == info:
            return i
    return -1


def _boot_slot(chip):
    act = chip.otadata.active(bootable_only=True) if chip.otadata else -1
    if act < 0:
        return chip.slots[0] if chip.slots else None
    return chip.slots[(chip.otadata.entries()[act].seq - 1) % len(chip.slots)]


def ota_state_of_running():
    """Sim-only introspection for tests/logs: otadata state name of the running slot."""
    chip = _need_chip()
    return chip.otadata.running_state(len(chip.slots), _slot_index(chip, chip.running))


def run_bootloader(chip, log=None):
    """The second-stage bootloader: pick the slot, abort an image still pending verification
    from its previous boot and mark a new one pending (only with CONFIG_BOOTLOADER_APP_ROLLBACK_
    ENABLE, chip.rollback: bootloader_utility.c lines 394-403, 444-450), fall back past images
    that do not verify. Sets chip.running and returns its info tuple."""
    od = chip.otadata
    while True:
        act = od.active(bootable_only=True)
        if act < 0:
            selected = 0
            break
        e = od.entries()[act]
        if not chip.rollback:
            selected = (e.seq - 1) % len(chip.slots)
            break
        if e.state == otadata.PENDING_VERIFY:
            od.write(act, e.seq, otadata.ABORTED)
            if log:
                log("rollback: image in %s was never confirmed; marked aborted" %
                    chip.slots[(e.seq - 1) % len(chip.slots)][4])
            continue
        if e.state == otadata.NEW:
            od.write(act, e.seq, otadata.PENDING_VERIFY)
        selected = (e.seq - 1) % len(chip.slots)
        break
    order = [selected] + [i for i in range(selected - 1, -1, -1)] + [i for i in range(selected + 1, len(chip.slots))]
    for i in order:
        if _verifies(Partition(chip.slots[i])):
            chip.running = chip.slots[i]
            if i != selected and log:
                log("boot: %s does not verify, booting %s" % (chip.slots[selected][4], chip.slots[i][4]))
            return chip.running
    raise OSError("no bootable app image")
