"""The README's board commands, through make itself (what users type)."""
import subprocess

from conftest import ROOT


def make(*args):
    return subprocess.run(["make", "-s"] + list(args), cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_make_flash_builds_the_esptool_command(tmp_path):
    fw = tmp_path / "ESP32_GENERIC_S3-SPIRAM_OCT-test.bin"
    fw.write_bytes(b"\xe9" + bytes(4095))
    proc = make("flash", "PORT=/dev/ttyACM7", "FIRMWARE=%s" % fw, "ERASE=1", "FLASH_ARGS=--dry-run")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("esptool", "--chip esp32s3", "--port /dev/ttyACM7", "write-flash", "--erase-all",
                   "--flash-size 16MB", "0x0 %s" % fw):
        assert needle in out, (needle, out)


def test_make_flash_without_firmware_says_what_to_download():
    proc = make("flash", "PORT=/dev/ttyACM7")
    assert proc.returncode != 0
    assert "FIRMWARE=" in proc.stderr and "ESP32_GENERIC_S3" in proc.stderr
