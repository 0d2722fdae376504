# esp32.Partition for the simulated board, backed by NorFlash, the partition table and otadata.
#
# Mirrors MicroPython's ports/esp32/esp32_partition.c (identical v1.24 .. v1.28 and master apart
# from romfs; line numbers below are v1.28.0) over ESP-IDF v5.4's esp_partition
# (components/esp_partition/partition_target.c), esp_ota_ops (components/app_update/
# esp_ota_ops.c) and the bootloader (components/bootloader_support/src/bootloader_utility.c).
# Where the port returns an error code the sim returns the same code; where it raises, the sim
# raises what check_esp_err (ports/esp32/mphalport.c:64) raises: OSError(-esp_err, name).
# Things that would trip the board up trip the sim up the same way -- notably block_size is a
# uint16_t, so Partition(label, 65536) has block size 0 and its ioctl(6) erases nothing.
from firmware import app_image, image_scan, otadata, partition_table

NATIVE_BLOCK_SIZE = 4096   # esp32_partition.c:42 NATIVE_BLOCK_SIZE_BYTES
# ESP-IDF esp_err.h / esp_ota_ops.h codes and the errno values of the esp32 port (newlib).
ESP_FAIL = -1
ESP_ERR_INVALID_ARG = 0x102
ESP_ERR_INVALID_SIZE = 0x104
ESP_ERR_NOT_FOUND = 0x105
ESP_ERR_OTA_VALIDATE_FAILED = 0x1503
_NAMES = {ESP_FAIL: "ESP_FAIL", ESP_ERR_INVALID_ARG: "ESP_ERR_INVALID_ARG",
          ESP_ERR_INVALID_SIZE: "ESP_ERR_INVALID_SIZE", ESP_ERR_NOT_FOUND: "ESP_ERR_NOT_FOUND",
          ESP_ERR_OTA_VALIDATE_FAILED: "ESP_ERR_OTA_VALIDATE_FAILED"}
MP_ENOENT = 2
MP_EINVAL = 22
SUBTYPE_FACTORY = 0x00
SUBTYPE_OTA_MIN = 0x10
SUBTYPE_OTA_MAX = 0x20
SUBTYPE_ANY = 0xFF

_chip = None  # set by install(); one simulated chip per process, like the real esp32 module


class Chip:
    def __init__(self, flash, rollback=True):
        self.flash = flash
        self.rollback = rollback  # CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE of the simulated build
        table = bytearray(partition_table.MAX_LEN)
        flash.read(partition_table.OFFSET, table)
        self.table = partition_table.parse(table)
        od = _find_first(self.table, partition_table.TYPE_DATA, partition_table.SUBTYPE_OTA_DATA)
        self.otadata = otadata.OtaData(flash, od[2]) if od else None
        self.factory = _find_first(self.table, partition_table.TYPE_APP, SUBTYPE_FACTORY)
        # esp_ota_get_app_partition_count: ota_0, ota_1, ... while they exist (esp_ota_ops.c).
        self.slots = []
        while True:
            row = _find_first(self.table, partition_table.TYPE_APP, SUBTYPE_OTA_MIN + len(self.slots))
            if row is None or len(self.slots) >= 16:
                break
            self.slots.append(row)
        self.running = None  # the info tuple the bootloader started


def _find_first(table, type, subtype, label=None):
    """esp_partition_find_first: the first table row matching type, subtype (0xFF any), label."""
    for row in table:
        if row[0] == type and (subtype == SUBTYPE_ANY or row[1] == subtype) and \
                (label is None or row[4] == label):
            return row
    return None


def install(chip):
    global _chip
    _chip = chip


def _need_chip():
    if _chip is None:
        raise OSError("simulated flash not installed")
    return _chip


def check_esp_err(code):
    """ports/esp32/mphalport.c check_esp_err_: ESP_OK passes, anything else raises
    OSError(-code, name) (ESP_ERR_NO_MEM/TIMEOUT/NOT_SUPPORTED map to errnos; we never make them)."""
    if code:
        raise OSError(-code, _NAMES.get(code, "ESP_ERR_0x%x" % code))


def _u32(v):
    return v & 0xFFFFFFFF  # the port computes offsets as uint32_t


# ---- ESP-IDF esp_partition (partition_target.c) ---------------------------------------------
def _read(info, off, buf):
    if off > info[3]:                      # esp_partition_read: src_offset > size
        return ESP_ERR_INVALID_ARG
    if len(buf) > info[3] - off:           # size > partition->size - src_offset
        return ESP_ERR_INVALID_SIZE
    _chip.flash.read(info[2] + off, buf)
    return 0


def _write(info, off, buf):
    if off > info[3]:                      # esp_partition_write: dst_offset > size
        return ESP_ERR_INVALID_ARG
    if len(buf) > info[3] - off:
        return ESP_ERR_INVALID_SIZE
    _chip.flash.program(info[2] + off, buf)  # esp_flash_write: no erase, bits only clear
    return 0


def _erase_range(info, off, size):
    """esp_partition_erase_range, then esp_flash_erase_region (esp_flash_api.c:594), which
    NorFlash.erase mirrors: a 64 KiB block erase wherever the address is block aligned and at
    least 64 KiB remain, else a 4 KiB sector erase."""
    if off > info[3]:
        return ESP_ERR_INVALID_ARG
    if size > info[3] - off or size % NATIVE_BLOCK_SIZE:
        return ESP_ERR_INVALID_SIZE
    if off % NATIVE_BLOCK_SIZE:
        return ESP_ERR_INVALID_ARG
    if size:
        _chip.flash.erase(info[2] + off, size)
    return 0


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=NATIVE_BLOCK_SIZE):
        chip = _need_chip()
        if isinstance(id, tuple):  # sim-internal: a table row, for find() / get_next_update()
            info = id
        elif isinstance(id, int):  # esp32_partition_make_new, esp32_partition.c:100
            if id == Partition.BOOT:
                info = _boot_partition(chip)
            elif id == Partition.RUNNING:
                info = chip.running
            else:
                raise ValueError()
        else:                      # a label: app partitions first, then data (lines 114-118)
            info = _find_first(chip.table, Partition.TYPE_APP, SUBTYPE_ANY, id) or \
                _find_first(chip.table, Partition.TYPE_DATA, SUBTYPE_ANY, id)
        if info is None:           # esp32_partition_new, line 71
            raise OSError(MP_ENOENT)
        self._info = info
        self._bs = block_size & 0xFFFF  # uint16_t block_size (lines 53, 122-124): 65536 -> 0
        # Below the native size writes go through a 4 KiB cache (lines 77-81).
        self._cache = bytearray(NATIVE_BLOCK_SIZE) if self._bs < NATIVE_BLOCK_SIZE else None

    @staticmethod
    def find(type=TYPE_APP, subtype=SUBTYPE_ANY, label=None, block_size=NATIVE_BLOCK_SIZE):
        # esp32_partition_find (line 149): every match, in table order, same uint16 block size.
        out = []
        for row in _need_chip().table:
            if row[0] == type and (subtype == SUBTYPE_ANY or row[1] == subtype) and \
                    (label is None or row[4] == label):
                out.append(Partition(row, block_size))
        return out

    def info(self):
        return self._info

    def __repr__(self):
        t, st, addr, size, label, enc = self._info
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=%d>" % (
            t, st, addr, size, label, enc)

    def readblocks(self, block_num, buf, offset=None):
        # esp32_partition_readblocks (line 198): offset = n * block_size (+ offset).
        off = block_num * self._bs
        if offset is not None:
            off += offset
        check_esp_err(_read(self._info, _u32(off), buf))

    def writeblocks(self, block_num, buf, offset=None):
        # esp32_partition_writeblocks (line 211).
        info = self._info
        off = _u32(block_num * self._bs)
        if offset is None:
            # A simple write, which erases first (lines 216-240).
            if self._bs >= NATIVE_BLOCK_SIZE:
                check_esp_err(_erase_range(info, off, len(buf)))
            else:
                self._erase_sections(off, len(buf))
        else:
            off = _u32(off + offset)   # the extended write: the caller erased (line 243)
        check_esp_err(_write(info, off, buf))

    def _erase_sections(self, offset, n):
        # Lines 222-239: read-modify-erase every 4 KiB sector the write touches, putting back
        # what lies outside [offset, offset + n).
        info = self._info
        cache = self._cache
        addr = offset // NATIVE_BLOCK_SIZE * NATIVE_BLOCK_SIZE
        o = offset % NATIVE_BLOCK_SIZE
        top = offset + n
        while addr < top:
            if o > 0 or top < addr + NATIVE_BLOCK_SIZE:
                check_esp_err(_read(info, addr, cache))
            check_esp_err(_erase_range(info, addr, NATIVE_BLOCK_SIZE))
            if o > 0:
                check_esp_err(_write(info, addr, memoryview(cache)[:o]))
            if top < addr + NATIVE_BLOCK_SIZE:
                check_esp_err(_write(info, top, memoryview(cache)[top - addr:]))
            o = 0
            addr += NATIVE_BLOCK_SIZE

    def ioctl(self, op, arg):
        # esp32_partition_ioctl (line 250); MP_BLOCKDEV_IOCTL_* numbers from extmod/vfs.h:48-53.
        if op in (1, 2, 3):            # INIT, DEINIT, SYNC
            return 0
        if op == 4:                    # BLOCK_COUNT: size / block_size
            if self._bs == 0:
                # C integer division by zero: an IntegerDivideByZero panic on the Xtensa core.
                raise ZeroDivisionError("IntegerDivideByZero: block_size is 0 (the board panics)")
            return self._info[3] // self._bs
        if op == 5:                    # BLOCK_SIZE
            return self._bs
        if op == 6:                    # BLOCK_ERASE: only for native-size blocks (lines 264-271)
            if self._bs != NATIVE_BLOCK_SIZE:
                return -MP_EINVAL
            check_esp_err(_erase_range(self._info, _u32(arg * NATIVE_BLOCK_SIZE), NATIVE_BLOCK_SIZE))
            return 0
        return None

    def set_boot(self):
        # esp32_partition_set_boot -> esp_ota_set_boot_partition (esp_ota_ops.c).
        check_esp_err(_set_boot_partition(_need_chip(), self))

    def get_next_update(self):
        # esp32_partition_get_next_update (line 285): always a 4096 block size; NULL -> ENOENT.
        info = _next_update_partition(_need_chip(), self._info)
        if info is None:
            raise OSError(MP_ENOENT)
        return Partition(info)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        # esp_ota_mark_app_valid_cancel_rollback -> esp_ota_current_ota_is_workable(true).
        check_esp_err(_mark_valid(_need_chip()))


# ---- ESP-IDF esp_ota_ops.c ------------------------------------------------------------------
def _verifies(part):
    # Header, chip, checksum and SHA-256, as esp_image_verify checks before booting/switching.
    try:
        image_scan.verify_image(part)
        return True
    except (app_image.ImageError, OSError):
        return False


def _set_boot_partition(chip, part):
    if not _verifies(part):                       # image_validate first, whatever the type
        return ESP_ERR_OTA_VALIDATE_FAILED
    t, subtype = part.info()[0], part.info()[1]
    if t != Partition.TYPE_APP:
        return ESP_ERR_INVALID_ARG
    od = chip.otadata
    if od is None:
        return ESP_ERR_NOT_FOUND
    if subtype == SUBTYPE_FACTORY:                # factory: erase otadata altogether
        row = _find_first(chip.table, partition_table.TYPE_DATA, partition_table.SUBTYPE_OTA_DATA)
        return _erase_range(row, 0, row[3])
    sub_id = subtype & 0x0F                       # esp_rewrite_ota_data: SUB_TYPE_ID(subtype)
    if sub_id >= len(chip.slots):
        return ESP_ERR_INVALID_ARG
    # set_new_state_otadata (esp_ota_ops.c lines 127-135): NEW with rollback, else UNDEFINED
    od.set_boot(sub_id, len(chip.slots), otadata.NEW if chip.rollback else otadata.UNDEFINED)
    return 0


def _default_boot_partition(chip):
    # find_default_boot_partition: factory, else the first OTA slot, else the test app.
    if chip.factory is not None:
        return chip.factory
    if chip.slots:
        return chip.slots[0]
    return _find_first(chip.table, Partition.TYPE_APP, 0x20)


def _boot_partition(chip):
    # esp_ota_get_boot_partition.
    od = chip.otadata
    if od is None:
        return None
    e = od.entries()
    if (e[0].invalid() and e[1].invalid()) or not chip.slots:
        return _default_boot_partition(chip)
    act = od.active()
    if act < 0:
        return _default_boot_partition(chip)
    return chip.slots[(e[act].seq - 1) % len(chip.slots)]


def _next_update_partition(chip, start_from):
    # esp_ota_get_next_update_partition: the OTA slot after start_from, else the first one.
    default = None
    next_is_result = False
    for row in chip.slots:
        if default is None:
            default = row
        if row == start_from:
            next_is_result = True
        elif next_is_result:
            return row
    return default


def _mark_valid(chip):
    # esp_ota_current_ota_is_workable(true): the active entry becomes VALID -- whichever slot
    # it names; ESP-IDF does not compare it with the running partition.
    od = chip.otadata
    if od is None:
        return ESP_ERR_NOT_FOUND
    act = od.active()
    if act < 0 or not chip.slots:
        return ESP_FAIL                           # "Running firmware is factory"
    e = od.entries()[act]
    if e.state != otadata.VALID:
        od.write(act, e.seq, otadata.VALID)       # rewrite_ota_seq: erase sector, write entry
    return 0


def ota_state_of_running():
    """Sim-only introspection for tests/logs: otadata state name of the running slot."""
    chip = _need_chip()
    slot = chip.slots.index(chip.running) if chip.running in chip.slots else -1
    return chip.otadata.running_state(len(chip.slots), slot)


# ---- the second-stage bootloader (bootloader_utility.c) -------------------------------------
def run_bootloader(chip, log=None):
    """bootloader_utility_get_selected_boot_partition + bootloader_utility_load_boot_image,
    with CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE (MicroPython's boards/sdkconfig.base) when
    chip.rollback (the pending/aborted steps are under that #ifdef: bootloader_utility.c lines
    394-403, 444-450), and no anti-rollback. Sets chip.running and returns its info tuple."""
    od = chip.otadata
    count = len(chip.slots)
    FACTORY = -1
    initial = False
    if od is None:
        boot_index = FACTORY
    else:
        e = od.entries()
        for i in (0, 1):   # an image still pending verification never confirmed itself
            if chip.rollback and e[i].state == otadata.PENDING_VERIFY:
                od.write(i, e[i].seq, otadata.ABORTED)
                if log and count:
                    log("rollback: image in %s was never confirmed; marked aborted" %
                        chip.slots[(e[i].seq - 1) % count][4])
        e = od.entries()
        if (e[0].invalid() and e[1].invalid()) or count == 0:
            if chip.factory is not None:
                boot_index = FACTORY
            else:
                boot_index = 0     # "No factory image, trying OTA 0"
                initial = e[0].initial() and e[1].initial()
        else:
            act = od.active()
            if act >= 0:
                boot_index = (e[act].seq - 1) % count
                if chip.rollback and e[act].state == otadata.NEW:
                    od.write(act, e[act].seq, otadata.PENDING_VERIFY)
            else:
                boot_index = FACTORY
    # load_boot_image: from the selected index down to the factory app, then upwards.
    order = list(range(boot_index, FACTORY - 1, -1)) + list(range(boot_index + 1, count))
    for index in order:
        row = chip.factory if index == FACTORY else chip.slots[index]
        if row is None or not _verifies(Partition(row)):
            continue
        if index > FACTORY and initial:
            # set_actual_ota_seq: otadata[0] = {seq index + 1, VALID}, so esp_ota_ops and the
            # next boot see this slot chosen, exactly as on hardware.
            od.write(0, index + 1, otadata.VALID)
        if index != boot_index and log and boot_index > FACTORY:
            log("boot: %s does not verify, booting %s" % (chip.slots[boot_index][4], row[4]))
        chip.running = row
        return row
    raise OSError("no bootable app image")
