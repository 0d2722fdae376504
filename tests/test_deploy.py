"""From clone to board, without a board: the real mpremote against the unix port behind a pty
(tools/sim_serial.py), the real esptool on images the project builds, and the board definition."""
import hashlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

import build_image
import deploy
import flash as flash_tool
import gen_package_json
import partition_table as pt
from conftest import ROOT, run_mpy
from sim_serial import SimSerialBoard

PY = sys.executable
MPREMOTE = [PY, "-m", "mpremote"]
ESPTOOL = [PY, "-m", "esptool"]
DEPLOY = [PY, os.path.join(ROOT, "tools", "deploy.py")]
FLASH = [PY, os.path.join(ROOT, "tools", "flash.py")]
BOARD_DIR = os.path.join(ROOT, "tools", "board", "ESP_BOX_3_OTA")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def request_from_log(text):
    """The OTA-check request main.py prints on boot: the last JSON object line of the log."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and '"body"' in line:
            return json.loads(line)
    raise AssertionError("no board info in the log:\n" + text[-3000:])


@pytest.fixture
def board(tmp_path):
    """A freshly flashed simulated ESP-BOX-3 (flash, efuse, Wi-Fi) with nothing deployed, on a pty."""
    import mkflash
    root = mkflash.make_device_root(str(tmp_path / "board"), version="1.0.0")
    with SimSerialBoard(root) as b:
        yield b


@pytest.fixture
def user_config(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"ota_url": None, "language": "en-US", "log_level": "info"}))
    return str(path)


def run(cmd, timeout=60, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)
    assert proc.returncode == 0, "%s failed (%d):\n%s\n%s" % (cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def run_deploy(port, *args, config=None, log_seconds=8):
    cmd = DEPLOY + ["deploy", "--port", port, "--log-seconds", str(log_seconds)]
    if config:
        cmd += ["--config", config]
    return run(cmd + list(args))


def counts(out):
    m = re.search(r"(\d+) copied, (\d+) removed, (\d+) up to date", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


def shipped_files():
    return ["boot.py", "main.py"] + deploy._walk("firmware") + deploy._walk("lib", deploy.LIB_SKIP)


# -- the simulated serial board -----------------------------------------------------------------

def test_unix_port_speaks_mpremote_raw_repl_and_soft_resets(board):
    assert run(MPREMOTE + ["connect", board.port, "exec", "print(6 * 7)"]).strip() == "42"
    assert b"raw REPL; CTRL-B to exit\r\n" in board.output and b"MPY: soft reboot\r\n" in board.output
    boots = board.boots
    src = os.path.join(ROOT, "boot.py")
    run(MPREMOTE + ["connect", board.port, "fs", "cp", src, ":x.py", "+", "fs", "sha256sum", ":x.py"])
    assert sha256(os.path.join(board.root, "x.py")) == sha256(src)
    assert board.boots == boots + 1  # mpremote soft-resets once per connection
    out = run(MPREMOTE + ["connect", board.port, "exec", "import os; print(os.getcwd())"])
    assert out.strip() == board.root  # the scratch folder stands for the board's filesystem root


# -- deploy --------------------------------------------------------------------------------------

def test_deploy_copies_all_then_nothing_boots_and_prints_board_info(board, user_config):
    if subprocess.run(["make", "-q", "-n", "deploy"], cwd=ROOT, capture_output=True).returncode == 2:
        out = run_deploy(board.port, config=user_config)          # no Makefile target yet
    else:
        out = run(["make", "-s", "deploy", "PORT=" + board.port, "CONFIG=" + user_config,
                   "DEPLOY_ARGS=--log-seconds 8"], timeout=120)
    files = shipped_files()
    assert counts(out) == (len(files) + 1, 0, 0)
    for rel in files:
        assert sha256(os.path.join(board.root, rel)) == sha256(os.path.join(ROOT, rel)), rel
    assert sha256(os.path.join(board.root, "config.json")) == sha256(user_config)
    # The soft reset ran the deployed main.py on the board, which printed its board info.
    req = request_from_log(out)
    assert req["body"]["chip_model_name"] == "esp32s3"
    assert req["body"]["application"]["version"] == "1.0.0"
    assert req["body"]["language"] == "en-US"     # our config, not the board's old one
    assert req["headers"]["User-Agent"] == "esp-box-3/1.0.0"

    mtimes = {rel: os.stat(os.path.join(board.root, rel)).st_mtime_ns for rel in files}
    again = run_deploy(board.port, config=user_config, log_seconds=0)
    assert counts(again) == (0, 0, len(files) + 1)
    assert {rel: os.stat(os.path.join(board.root, rel)).st_mtime_ns for rel in files} == mtimes

    with open(user_config, "w") as f:
        json.dump({"ota_url": None, "language": "zh-CN"}, f)
    third = run_deploy(board.port, config=user_config)
    assert counts(third) == (1, 0, len(files)) and "copy   config.json" in third
    assert request_from_log(third)["body"]["language"] == "zh-CN"


def test_deploy_mpy_compiles_for_the_board_and_removes_what_would_shadow_it(board, user_config):
    # Leftovers of an earlier deploy: a module we no longer ship, and source next to a new .mpy.
    os.makedirs(os.path.join(board.root, "firmware"))
    os.makedirs(os.path.join(board.root, "lib", "umqtt"))
    for rel in ("firmware/retired.py", "lib/umqtt/simple.py", "lib/users_own.py"):
        with open(os.path.join(board.root, rel), "w") as f:
            f.write("raise ImportError('stale')\n")
    out = run_deploy(board.port, "--mpy", config=user_config)
    copied, removed, _ = counts(out)
    assert removed == 2 and "remove firmware/retired.py" in out and "remove lib/umqtt/simple.py" in out
    assert os.path.exists(os.path.join(board.root, "lib", "users_own.py"))  # not ours: kept
    fw = [rel for rel in shipped_files() if rel.startswith(("firmware/", "lib/"))]
    for rel in fw:
        on_board = os.path.join(board.root, rel)
        assert not os.path.exists(on_board), rel
        with open(on_board[:-3] + ".mpy", "rb") as f:
            head = f.read(4)
        assert head[:2] == b"M\x06", rel  # .mpy header: 'M', bytecode version 6
    assert copied == len(fw) + 3  # + boot.py, main.py, config.json
    # The board booted the compiled package (no .py of ours left to import instead).
    assert request_from_log(out)["body"]["chip_model_name"] == "esp32s3"
    assert counts(run_deploy(board.port, "--mpy", config=user_config, log_seconds=0))[:2] == (0, 0)


def test_dry_run_changes_nothing(board, user_config):
    before = sorted(os.listdir(board.root))
    out = run_deploy(board.port, "--dry-run", config=user_config)
    assert counts(out)[0] == len(shipped_files()) + 1 and "(dry run)" in out
    assert sorted(os.listdir(board.root)) == before


def test_frozen_build_gets_only_scripts_and_config(board, user_config):
    run_deploy(board.port, config=user_config, log_seconds=0)
    out = run_deploy(board.port, "--frozen", config=user_config, log_seconds=0)
    assert counts(out)[1] == len([r for r in shipped_files() if r.startswith(("firmware/", "lib/"))])
    assert not os.listdir(os.path.join(board.root, "firmware")) or not any(
        f.endswith((".py", ".mpy")) for _, _, fs in os.walk(os.path.join(board.root, "firmware")) for f in fs)
    assert os.path.exists(os.path.join(board.root, "main.py"))


def test_mpy_header_decoding():
    assert deploy.decode_mpy(2822) == (6, 3, "x64")                     # this unix port
    assert deploy.decode_mpy(6 | 3 << 8 | 10 << 10) == (6, 3, "xtensawin")  # an ESP32-S3
    assert deploy.mpy_cross_version() == (6, 3)


def test_console_opens_the_repl_and_ctrl_bracket_leaves(board):
    master, slave = pty.openpty()
    proc = subprocess.Popen(DEPLOY + ["console", "--port", board.port], stdin=slave, stdout=slave,
                            stderr=slave, close_fds=True, cwd=ROOT)
    os.close(slave)
    seen = bytearray()

    def expect(needle, timeout=10):
        end = time.monotonic() + timeout
        while needle not in seen and time.monotonic() < end:
            if select.select([master], [], [], 0.1)[0]:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:
                    break
        return needle in seen

    try:
        assert expect(b"Connected to MicroPython")
        os.write(master, b"print(6 * 7)\r")
        assert expect(b"42")
        os.write(master, b"\x1d")  # Ctrl-]
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


# -- mip / package.json --------------------------------------------------------------------------

def test_package_json_lists_every_firmware_file_and_is_current():
    with open(os.path.join(ROOT, "package.json")) as f:
        text = f.read()
    doc = json.loads(text)
    on_disk = set(gen_package_json.firmware_files())
    assert on_disk and {dest for dest, _ in doc["urls"]} == on_disk, \
        "package.json is stale: run `make package.json` (tools/gen_package_json.py)"
    assert all(dest == src for dest, src in doc["urls"])  # relative to package.json's own URL
    assert doc["deps"] == [["umqtt.simple", "1.3.4"]]
    assert text == gen_package_json.render()


def test_mip_installs_the_package_from_package_json(board, tmp_path):
    # A local stand-in for the micropython-lib index, so the dependency resolves offline.
    pkg = tmp_path / "index" / "package" / "6" / "umqtt.simple"
    (pkg / "umqtt").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "lib", "umqtt", "simple.py"), pkg / "umqtt" / "simple.py")
    (pkg / "1.3.4.json").write_text(json.dumps({"urls": [["umqtt/simple.py", "umqtt/simple.py"]]}))
    out = run(MPREMOTE + ["connect", board.port, "mip", "install", "--target", "lib",
                          "--index", str(tmp_path / "index"), os.path.join(ROOT, "package.json")])
    assert "Installing" in out
    with open(os.path.join(ROOT, "package.json")) as f:
        listed = [dest for dest, _ in json.load(f)["urls"]]
    for rel in listed:
        assert sha256(os.path.join(board.root, "lib", rel)) == sha256(os.path.join(ROOT, rel)), rel
    assert sha256(os.path.join(board.root, "lib", "umqtt", "simple.py")) == sha256(
        os.path.join(ROOT, "lib", "umqtt", "simple.py"))
    # Importable from /lib on the board, as on a device.
    proc = run_mpy("import firmware.version as v; print(v.is_newer('1.1', '1.0.9'))", cwd=board.root,
                   env={"MICROPYPATH": ".frozen:" + os.path.join(board.root, "lib")})
    assert proc.stdout.strip() == "True"


# -- esptool, without a board ----------------------------------------------------------------------

@pytest.fixture
def images(tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(build_image.build_image("1.2.3", size=64 * 1024))
    boot = tmp_path / "bootloader.bin"  # any valid ESP image does for esptool's merge
    boot.write_bytes(build_image.build_image("0.0.1", project_name="bootloader", seed=7))
    return tmp_path, boot, app


def image_info(data, tmp_path, name="img.bin"):
    path = tmp_path / name
    path.write_bytes(data)
    return run(ESPTOOL + ["--chip", "esp32s3", "image-info", str(path)])


def test_merge_puts_table_and_app_where_the_bootloader_looks(images):
    tmp, boot, app = images
    out = tmp / "merged.bin"
    run(FLASH + ["merge", "-o", str(out), "--bootloader", str(boot), "--app", str(app)])
    merged = out.read_bytes()
    rows = flash_tool.load_table()
    assert pt.from_binary(merged[0x8000:0x8000 + pt.TABLE_SIZE]) == rows
    otadata = [r for r in rows if r[0] == "otadata"][0]
    assert set(merged[otadata[3]:otadata[3] + otadata[4]]) == {0xFF}   # blank: boots ota_0
    assert merged[0x10000:] == app.read_bytes()
    info = image_info(merged[0x10000:], tmp)
    assert "App version: 1.2.3" in info and "(valid)" in info and "Chip ID: 9" in info
    head = image_info(merged, tmp, "head.bin")
    assert "Flash size: 16MB" in head and "Flash mode: DIO" in head and "Flash freq: 80m" in head


def official_like(tmp, boot, app):
    """A merged image laid out like micropython.org's ESP32_GENERIC_S3 builds: one factory app."""
    csv = tmp / "generic.csv"
    csv.write_text("nvs, data, nvs, 0x9000, 0x6000,\nphy_init, data, phy, 0xf000, 0x1000,\n"
                   "factory, app, factory, 0x10000, 0x1F0000,\n")
    table = tmp / "generic.bin"
    table.write_bytes(pt.to_binary(pt.parse_csv(csv.read_text())))
    out = tmp / "ESP32_GENERIC_S3-SPIRAM_OCT.bin"
    run(ESPTOOL + ["--chip", "esp32s3", "merge-bin", "-o", str(out), "0x0", str(boot), "0x8000", str(table),
                   "0x10000", str(app)])
    return out


def test_flash_partition_table_turns_an_official_build_ota_capable(images):
    tmp, boot, app = images
    official = official_like(tmp, boot, app)
    out = run(FLASH + ["flash", "--port", "/dev/ttyACM9", "--firmware", str(official), "--dry-run"])
    assert "no OTA slots" in out and "--partition-table" in out
    out = run(FLASH + ["flash", "--port", "/dev/ttyACM9", "--firmware", str(official), "--partition-table",
                       "--dry-run"])
    patched_path = re.search(r"wrote (\S+) with", out).group(1)
    patched = open(patched_path, "rb").read()
    original = official.read_bytes()
    assert pt.from_binary(patched[0x8000:0x8000 + pt.TABLE_SIZE]) == flash_tool.load_table()
    assert patched[:0x8000] == original[:0x8000] and patched[0x10000:] == original[0x10000:]
    assert set(patched[0xd000:0xf000]) == {0xFF}
    assert "App version: 1.2.3" in image_info(patched[0x10000:], tmp)
    assert ("esptool --chip esp32s3 --port /dev/ttyACM9 --baud 460800 write-flash -z --flash-mode dio "
            "--flash-freq 80m --flash-size 16MB 0x0 " + patched_path) in out
    # The same rewrite on its own, without a board.
    run(FLASH + ["ota-image", str(official), "-o", str(tmp / "ota.bin")])
    assert (tmp / "ota.bin").read_bytes() == patched


def test_ota_image_refuses_what_it_cannot_patch(images):
    tmp, boot, app = images
    rows = flash_tool.load_table()
    with pytest.raises(flash_tool.FlashError, match="not an ESP image"):
        flash_tool.ota_image(b"\x00" * 0x20000, rows)
    with pytest.raises(flash_tool.FlashError, match="partition table"):
        flash_tool.ota_image(app.read_bytes(), rows)                # an app alone, not merged
    big = bytearray(official_like(tmp, boot, app).read_bytes())
    big += b"\x00" * (0x300000 + 0x10000 - len(big) + 16)           # app larger than ota_0
    with pytest.raises(flash_tool.FlashError, match="does not fit"):
        flash_tool.ota_image(bytes(big), rows)


def test_esptool_accepts_the_flash_command_line(images):
    tmp, boot, app = images
    cmd = flash_tool.flash_command("/dev/nonexistent-esp-box-3", str(app), erase=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Usage:" not in text and "No such option" not in text
    assert "nonexistent-esp-box-3" in text  # it parsed everything and got as far as the port


# -- the board definition --------------------------------------------------------------------------

def sdkconfig(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def test_board_definition_builds_an_ota_layout():
    cfg = sdkconfig(os.path.join(BOARD_DIR, "sdkconfig.board"))
    assert cfg["CONFIG_ESPTOOLPY_FLASHSIZE_16MB"] == "y" and cfg["CONFIG_PARTITION_TABLE_CUSTOM"] == "y"
    assert cfg["CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE"] == "y"
    assert cfg["CONFIG_APP_PROJECT_VER_FROM_CONFIG"] == "y" and cfg["CONFIG_APP_EXCLUDE_PROJECT_VER_VAR"] == "n"
    cmake = open(os.path.join(BOARD_DIR, "mpconfigboard.cmake")).read()
    assert "set(IDF_TARGET esp32s3)" in cmake
    csv_ref = re.search(r"\$\{MICROPY_BOARD_DIR\}/(\S+\.csv)", cmake).group(1)
    assert os.path.realpath(os.path.join(BOARD_DIR, csv_ref)) == os.path.realpath(
        os.path.join(ROOT, "tools", "board", "partitions-esp-box-3-ota.csv"))
    defaults = re.search(r"set\(SDKCONFIG_DEFAULTS(.*?)\)", cmake, re.S).group(1).split()
    for name in ("boards/sdkconfig.base", "${ESP_BOX_3_SDKCONFIG_USB}", "boards/sdkconfig.240mhz",
                 "boards/sdkconfig.spiram_sx", "boards/sdkconfig.spiram_oct", "${MICROPY_BOARD_DIR}/sdkconfig.board"):
        assert name in defaults, name
    # later files override earlier ones: the board's own settings come after the port's
    assert defaults.index("${MICROPY_BOARD_DIR}/sdkconfig.board") > defaults.index("boards/sdkconfig.base")
    assert defaults.index("boards/sdkconfig.spiram_oct") > defaults.index("boards/sdkconfig.spiram_sx")
    header = open(os.path.join(BOARD_DIR, "mpconfigboard.h")).read()
    assert '"ESP-BOX-3 OTA"' in header and '"ESP32-S3"' in header
    assert json.load(open(os.path.join(BOARD_DIR, "board.json")))["mcu"] == "esp32s3"


def test_board_manifest_freezes_firmware_and_lib(tmp_path):
    """Run manifest.py the way MicroPython's manifestfile runs it (its folder as the working
    directory, $(...) path variables), with recording stand-ins for the manifest functions."""
    calls = []

    class Out:
        def __init__(self, target):
            self.target_path = target

    class Manifest:
        def __init__(self):
            self.frozen = [Out("umqtt/simple.py")]  # the esp32 port's manifest requires umqtt.simple

        def files(self):
            return self.frozen

        def include(self, path, **kw):
            calls.append(("include", path))

    m = Manifest()
    g = {
        "include": m.include,
        "package": lambda name, files=None, base_path=".", opt=None: calls.append(("package", name, base_path)),
        "module": lambda name, base_path=".", opt=None: calls.append(("module", name, base_path)),
        "require": lambda *a, **k: calls.append(("require",) + a),
        "freeze": lambda *a, **k: calls.append(("freeze",) + a),
    }
    cwd = os.getcwd()
    os.chdir(BOARD_DIR)
    try:
        exec(compile(open("manifest.py").read(), "manifest.py", "exec"), g)
    finally:
        os.chdir(cwd)
    assert ("include", "$(PORT_DIR)/boards/manifest.py") in calls
    packages = [c for c in calls if c[0] == "package"]
    assert packages == [("package", "firmware", os.path.realpath(ROOT))]
    assert not [c for c in calls if c[0] == "module"], "umqtt.simple is frozen by the port already"
    # Without the port's copy, the pinned lib/ module is frozen instead.
    m.frozen = []
    calls.clear()
    os.chdir(BOARD_DIR)
    try:
        exec(compile(open("manifest.py").read(), "manifest.py", "exec"), g)
    finally:
        os.chdir(cwd)
    assert [c for c in calls if c[0] == "module"] == [("module", "umqtt/simple.py", os.path.join(os.path.realpath(ROOT), "lib"))]


def test_deploy_ships_the_ca_file_the_config_names_and_refuses_broken_configs(board, tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"ota_url": None, "tls": {"verify": True, "ca_file": "certs/ca.pem"}}))
    out = run_deploy(board.port, "--no-reset", config=str(cfg))
    assert "copy   certs/ca.pem" in out
    assert sha256(os.path.join(board.root, "certs", "ca.pem")) == sha256(tmp_path / "certs" / "ca.pem")

    cfg.write_text(json.dumps({"tls": {"ca_file": "missing.pem"}}))
    proc = subprocess.run(DEPLOY + ["deploy", "--port", board.port, "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "missing.pem" in proc.stderr
    cfg.write_text('{"wifi": {"ssid": "x",}}')
    proc = subprocess.run(DEPLOY + ["deploy", "--port", board.port, "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "config" in proc.stderr


def test_sim_serial_command_line_makes_a_board_and_serves_mpremote(tmp_path):
    root = tmp_path / "sim-board"
    proc = subprocess.Popen([PY, os.path.join(ROOT, "tools", "sim_serial.py"), str(root)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/")
        assert (root / "flash.bin").stat().st_size == 16 * 1024 * 1024 and (root / "sim.json").exists()
        out = run(MPREMOTE + ["connect", port, "exec", "import os; print(sorted(os.listdir()))"])
        assert "flash.bin" in out and "sim.json" in out
    finally:
        proc.send_signal(2)
        assert proc.wait(10) == 0


def test_mpremote_interrupts_a_main_py_that_runs_forever(tmp_path):
    root = tmp_path / "busy"
    root.mkdir()
    (root / "main.py").write_text("import time\nprint('app running')\nwhile True:\n    time.sleep(0.05)\n")
    with SimSerialBoard(str(root)) as b:
        assert b.wait_output(b"app running")
        out = run(MPREMOTE + ["connect", b.port, "exec", "print('interrupted', 6 * 7)"], timeout=30)
        assert out.strip() == "interrupted 42"
        assert b"KeyboardInterrupt" in b.output  # Ctrl-C reached main.py as on a board


# The sdkconfig fragments of ports/esp32/boards/ each release has (git ls-tree of micropython
# v1.26.1 and v1.28.0): sdkconfig.usb was deleted before v1.27.0.
PORT_FRAGMENTS = {
    "v1.26.1": ["base", "usb", "ble", "240mhz", "spiram_sx", "spiram_oct"],
    "v1.28.0": ["base", "ble", "240mhz", "spiram_sx", "spiram_oct"],
}


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake not installed")
@pytest.mark.parametrize("release", sorted(PORT_FRAGMENTS))
def test_board_cmake_reads_only_fragments_the_release_has(tmp_path, release):
    """Run mpconfigboard.cmake as the port's CMakeLists.txt does (include it from the port
    folder, then file(READ) every SDKCONFIG_DEFAULTS entry, which fails on a missing file)."""
    port = tmp_path / "esp32"
    (port / "boards").mkdir(parents=True)
    for name in PORT_FRAGMENTS[release]:
        (port / "boards" / ("sdkconfig." + name)).write_text("# %s\n" % name)
    build = tmp_path / "build"
    build.mkdir()
    script = tmp_path / "port.cmake"
    script.write_text(
        'set(MICROPY_BOARD_DIR "%s")\n'
        'set(CMAKE_BINARY_DIR "%s")\n'
        'set(ESP_BOX_3_APP_VERSION 1.0.0)\n'
        'include(${MICROPY_BOARD_DIR}/mpconfigboard.cmake)\n'
        'foreach(F ${SDKCONFIG_DEFAULTS})\n'
        '    file(READ ${F} C)\n'
        '    message(STATUS "read ${F}")\n'
        'endforeach()\n' % (BOARD_DIR, build))
    p = subprocess.run(["cmake", "-P", str(script)], cwd=str(port), capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    read = [line.split("read ", 1)[1] for line in (p.stdout + p.stderr).splitlines() if "read " in line]
    assert ("boards/sdkconfig.usb" in read) == ("usb" in PORT_FRAGMENTS[release])
    assert read[-1].endswith("sdkconfig.esp_box_3_ota") and "boards/sdkconfig.spiram_oct" in read
