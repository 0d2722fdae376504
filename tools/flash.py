"""Flash MicroPython onto an ESP-BOX-3 with esptool, and build flash images without a board.

    python tools/flash.py flash --port /dev/ttyACM0 --firmware ESP32_GENERIC_S3-SPIRAM_OCT-....bin
                                [--erase] [--partition-table] [--dry-run]
    python tools/flash.py ota-image FIRMWARE.bin -o build/firmware-ota.bin
    python tools/flash.py merge -o build/merged.bin --bootloader BL.bin --app APP.bin [--table CSV]

`flash` writes a merged MicroPython image (bootloader, partition table and app in one file, as
micropython.org ships them for the ESP32-S3) at 0x0.

--partition-table: official ESP32_GENERIC_S3 builds carry a partition table with one factory app
and no otadata, so they cannot take an OTA update. This option rewrites the image's table at
0x8000 with ours (tools/board/partitions-esp-box-3-ota.csv: otadata, ota_0/ota_1, vfs) and blanks
the otadata range, so the app that sat at 0x10000 as `factory` boots as `ota_0` and the next
update goes to `ota_1`. The bootloader of those builds already has rollback compiled in
(ports/esp32/boards/sdkconfig.base sets CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE). The vfs moves,
so the board's filesystem is formatted afresh on first boot: deploy again afterwards.

`ota-image` does that rewrite only (no board needed); `merge` joins a bootloader, our partition
table and an app into one image with `esptool merge-bin`.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import partition_table as pt  # noqa: E402

ESPTOOL = [sys.executable, "-m", "esptool"]
CSV = os.path.join(HERE, "board", "partitions-esp-box-3-ota.csv")
FLASH_SIZE = 16 * 1024 * 1024
IMAGE_MAGIC = 0xE9
FLASH_ARGS = ["--flash-mode", "dio", "--flash-freq", "80m", "--flash-size", "16MB"]
BAUD = 460800


class FlashError(Exception):
    pass


def load_table(csv_path=CSV):
    with open(csv_path) as f:
        rows = pt.parse_csv(f.read())
    return pt.validate(rows, FLASH_SIZE)


def _find(rows, label):
    for row in rows:
        if row[0] == label:
            return row
    return None


def describe(rows):
    """One line: the labels, and whether the table can take an OTA update."""
    names = ", ".join("%s@0x%x" % (r[0], r[3]) for r in rows)
    return "%s (%s)" % (names, "OTA-capable" if is_ota_capable(rows) else "no OTA slots")


def is_ota_capable(rows):
    types = {(r[1], r[2]) for r in rows}
    return (1, 0x00) in types and (0, 0x10) in types and (0, 0x11) in types


def image_table(image):
    """The partition table inside a merged image (TableError when it holds none)."""
    if len(image) < pt.TABLE_OFFSET + pt.TABLE_SIZE:
        raise FlashError("image is %d bytes: not a merged image with a partition table at 0x8000"
                         % len(image))
    return pt.from_binary(image[pt.TABLE_OFFSET:pt.TABLE_OFFSET + pt.TABLE_SIZE])


def ota_image(image, rows):
    """Return `image` (a merged MicroPython image) with our partition table and blank otadata."""
    if not image or image[0] != IMAGE_MAGIC:
        raise FlashError("not an ESP image (first byte 0x%02x, expected 0xe9)" % (image[:1] or b"\0")[0])
    try:
        old = image_table(image)
    except pt.TableError as e:
        raise FlashError("no valid partition table at 0x8000 (%s): is this a merged image?" % e)
    apps = [r for r in old if r[1] == 0]
    if not apps:
        raise FlashError("the image's partition table has no app partition")
    app_off = min(r[3] for r in apps)
    slot = min((r for r in rows if r[1] == 0), key=lambda r: r[3])
    if slot[3] != app_off:
        raise FlashError("the image's app sits at 0x%x but our first app slot %s is at 0x%x"
                         % (app_off, slot[0], slot[3]))
    if len(image) <= app_off or image[app_off] != IMAGE_MAGIC:
        raise FlashError("no app image at 0x%x" % app_off)
    if len(image) - app_off > slot[4]:
        raise FlashError("the app (%d bytes) does not fit %s (%d bytes)"
                         % (len(image) - app_off, slot[0], slot[4]))
    out = bytearray(image)
    table = pt.to_binary(rows)
    out[pt.TABLE_OFFSET:pt.TABLE_OFFSET + len(table)] = table
    otadata = _find(rows, "otadata")
    if otadata:
        start, end = otadata[3], min(otadata[3] + otadata[4], len(out))
        out[start:end] = b"\xff" * (end - start)  # no valid entry: the bootloader boots ota_0
    return bytes(out)


def flash_command(port, firmware, erase=False, baud=BAUD):
    cmd = ESPTOOL + ["--chip", "esp32s3", "--port", port, "--baud", str(baud), "write-flash"]
    if erase:
        cmd.append("--erase-all")
    return cmd + ["-z"] + FLASH_ARGS + ["0x0", firmware]


def flash(port, firmware, erase=False, partition_table=False, csv_path=CSV, baud=BAUD,
          dry_run=False, out=sys.stdout, build_dir=None):
    with open(firmware, "rb") as f:
        image = f.read()
    try:
        table = image_table(image)
        out.write("firmware partition table: %s\n" % describe(table))
    except (FlashError, pt.TableError) as e:
        table = None
        out.write("firmware partition table: unreadable (%s)\n" % e)
    if partition_table:
        rows = load_table(csv_path)
        build_dir = build_dir or os.path.join(ROOT, "build")
        os.makedirs(build_dir, exist_ok=True)
        patched = os.path.join(build_dir, "firmware-ota.bin")
        with open(patched, "wb") as f:
            f.write(ota_image(image, rows))
        out.write("wrote %s with partition table %s\n" % (patched, describe(rows)))
        firmware = patched
    elif table is not None and not is_ota_capable(table):
        out.write("warning: this build cannot take OTA updates; add --partition-table "
                  "(or build tools/board/ESP_BOX_3_OTA)\n")
    cmd = flash_command(port, firmware, erase, baud)
    out.write("esptool " + " ".join(cmd[len(ESPTOOL):]) + "\n")
    out.flush()
    if dry_run:
        return cmd
    if subprocess.call(cmd) != 0:
        raise FlashError("esptool failed")
    return cmd


def merge(output, bootloader, app, csv_path=CSV):
    """esptool merge-bin: bootloader at 0x0, our partition table at 0x8000, app in the first
    app slot; the gaps (otadata included) are 0xFF, i.e. erased."""
    rows = load_table(csv_path)
    slot = min((r for r in rows if r[1] == 0), key=lambda r: r[3])
    with tempfile.TemporaryDirectory() as tmp:
        table_bin = os.path.join(tmp, "partition-table.bin")
        with open(table_bin, "wb") as f:
            f.write(pt.to_binary(rows))
        cmd = ESPTOOL + ["--chip", "esp32s3", "merge-bin", "-o", output] + FLASH_ARGS + [
            "0x0", bootloader, "0x%x" % pt.TABLE_OFFSET, table_bin, "0x%x" % slot[3], app]
        if subprocess.call(cmd) != 0:
            raise FlashError("esptool merge-bin failed")
    return cmd


def main(argv=None):
    ap = argparse.ArgumentParser(description="esptool helpers for the ESP-BOX-3.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("flash", help="write a merged MicroPython image at 0x0")
    f.add_argument("--port", required=True)
    f.add_argument("--firmware", required=True, help="merged .bin, e.g. ESP32_GENERIC_S3-SPIRAM_OCT-*.bin")
    f.add_argument("--erase", action="store_true", help="erase the whole flash first")
    f.add_argument("--partition-table", action="store_true",
                   help="replace the image's partition table with our OTA table")
    f.add_argument("--csv", default=CSV, help="partition table CSV (default: the ESP-BOX-3 OTA table)")
    f.add_argument("--baud", type=int, default=BAUD)
    f.add_argument("--dry-run", action="store_true", help="print the esptool command, do not run it")
    o = sub.add_parser("ota-image", help="rewrite a merged image with our OTA partition table")
    o.add_argument("firmware")
    o.add_argument("-o", "--output", required=True)
    o.add_argument("--csv", default=CSV)
    m = sub.add_parser("merge", help="merge bootloader, partition table and app (esptool merge-bin)")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--bootloader", required=True)
    m.add_argument("--app", required=True)
    m.add_argument("--csv", default=CSV)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "flash":
            flash(args.port, args.firmware, args.erase, args.partition_table, args.csv, args.baud,
                  args.dry_run)
        elif args.cmd == "ota-image":
            with open(args.firmware, "rb") as fh:
                image = fh.read()
            rows = load_table(args.csv)
            with open(args.output, "wb") as fh:
                fh.write(ota_image(image, rows))
            print("wrote %s: %s" % (args.output, describe(rows)))
        else:
            merge(args.output, args.bootloader, args.app, args.csv)
    except (FlashError, pt.TableError, OSError) as e:
        print("flash: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
