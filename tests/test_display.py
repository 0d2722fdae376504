"""The ESP-BOX-3 screen: ILI9342C driver command stream, the simulated panel, screen layouts
checked pixel by pixel in the PNGs the device code writes, change-only pushes, band-sized memory,
and the console renderer. Device code runs under the real micropython binary; the PNGs are
decoded here in CPython with an independent decoder."""
import json
import os
import struct
import zlib

import pytest

from conftest import mpy_json

W, H = 320, 240

# -- helpers (CPython side) -------------------------------------------------------------------


def decode_png(path):
    """Minimal PNG decoder: 8-bit RGB, any filter; checks signature and every chunk CRC."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, ihdr, kinds = 8, b"", None, []
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        (crc,) = struct.unpack(">I", data[i + 8 + n:i + 12 + n])
        assert zlib.crc32(kind + body) == crc, kind
        kinds.append(kind)
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    w, h, depth, ctype, _, _, interlace = ihdr
    assert (depth, ctype, interlace) == (8, 2, 0)
    raw = zlib.decompress(idat)            # also checks the Adler-32
    stride = w * 3
    assert len(raw) == h * (stride + 1)
    rows, prev = [], bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride if f else 0):
            a = line[x - 3] if x >= 3 else 0
            b = prev[x]
            c = prev[x - 3] if x >= 3 else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
            else:
                raise AssertionError("bad filter %d" % f)
        rows.append(bytes(line))
        prev = line
    return w, h, rows


def px(img, x, y):
    row = img[2][y]
    return tuple(row[x * 3:x * 3 + 3])


def rgb888(c565):
    """How an RGB565 value looks once widened to 8 bits per channel (bit replication)."""
    r, g, b = (c565 >> 11) & 31, (c565 >> 5) & 63, c565 & 31
    return ((r << 3) | (r >> 2), (g << 2) | (g >> 4), (b << 3) | (b >> 2))


def mpy(code, **kw):
    return mpy_json(code, **kw)


SETUP = """
import json, gc
from firmware.display import Display, sim_panel, screens
from firmware.display.lcd_renderer import LcdRenderer
lcd = sim_panel.make_lcd()
panel = lcd.panel
lr = LcdRenderer(lcd)
d = Display([lr], shot_dir=SHOTDIR, strict=True)
"""


def setup(shot_dir):
    return SETUP.replace("SHOTDIR", repr(str(shot_dir)))


@pytest.fixture(scope="module")
def font():
    """The built-in framebuf 8x8 font, rendered by framebuf itself at scale 1 (no code of ours)."""
    return mpy("""
import framebuf, json
out = {}
for ch in "0123456789":
    b = bytearray(8)
    framebuf.FrameBuffer(b, 8, 8, framebuf.MONO_HLSB).text(ch, 0, 0, 1)
    out[ch] = list(b)
print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def consts():
    return mpy("""
import json
from firmware.display import screens as s
print(json.dumps({k: getattr(s, k) for k in ("FG", "BG", "CELL", "TRACK", "FILL", "DIM", "AMBER", "BLUE",
      "BAR_X", "BAR_Y", "BAR_W", "BAR_H", "HEAD_H", "FOOT_Y")}))
""")


# -- driver: the command stream -----------------------------------------------------------------

WIRE = """
import json, binascii
from firmware.display.ili9342 import ILI9342
from firmware.board import esp_box_3 as hw
EV = []
class Pin:
    def __init__(self, name, v): self.name = name; self.v = v
    def value(self, v=None):
        if v is None: return self.v
        if v != self.v: EV.append([self.name, v])   # record level changes, like a logic analyser
        self.v = v
class Spi:
    def write(self, b): EV.append(["spi", binascii.hexlify(b).decode()])
pins = dict(dc=Pin("dc", 0), cs=Pin("cs", 1), rst=Pin("rst", 0), bl=Pin("bl", 0))
lcd = ILI9342(Spi(), width=320, height=240, mirror_x=hw.LCD_MIRROR_X, mirror_y=hw.LCD_MIRROR_Y,
              bgr=hw.LCD_BGR, rst_active=hw.LCD_RST_ACTIVE, bl_active=hw.LCD_BACKLIGHT_ON,
              tuning=hw.LCD_PANEL_TUNING, sleep_ms=lambda ms: EV.append(["wait", ms]), **pins)
"""


def transactions(events):
    """Group wire events into (command, params, waits-before) frames; check the framing rules:
    command byte with DC low, parameters with DC high, all inside one CS-low frame."""
    out, state, cur, waited = [], {"dc": 0, "cs": 1, "rst": 0, "bl": 0}, None, 0
    other = []
    for ev in events:
        kind = ev[0]
        if kind == "wait":
            waited += ev[1]
        elif kind in ("dc", "cs", "rst", "bl"):
            state[kind] = ev[1]
            if kind == "cs" and ev[1] == 1 and cur is not None:
                out.append(cur)
                cur = None
            if kind in ("rst", "bl"):
                other.append((kind, ev[1], waited))
                waited = 0
        else:
            assert state["cs"] == 0, "SPI traffic with CS high"
            data = bytes.fromhex(ev[1])
            if state["dc"] == 0:
                assert len(data) == 1 and cur is None, "one command byte per CS frame"
                cur = [data[0], b"", waited]
                waited = 0
            else:
                assert cur is not None, "parameters without a command"
                cur[1] += data
    assert cur is None, "CS left low"
    return out, other


def test_init_sequence_matches_controller_documentation():
    ev = mpy(WIRE + "lcd.init(clear=0x1234)\nprint(json.dumps(EV))")
    cmds, other = transactions(ev)
    # Hardware reset, active-high on this board: pulse high, release, 120 ms before Sleep Out.
    assert [o[:2] for o in other] == [("rst", 1), ("rst", 0), ("bl", 1)]
    assert other[1][2] >= 1                       # reset held (datasheet: >= 10 us)
    got = [(c, p.hex()) for c, p, _ in cmds]
    expected = [
        (0xC8, "ff9342"),                         # EXTC: unlock the extended command set
        (0xC0, "0e0e"), (0xC5, "d0"), (0xC1, "02"), (0xB4, "02"),
        (0xE0, "000308061309393948020a081717" + "0f"),
        (0xE1, "002829010d033f3352040f0e3738" + "0f"),
        (0xB1, "001b"), (0xB7, "06"),
        (0x36, "c8"),                             # MADCTL: MY|MX (mirrored both axes) + BGR order
        (0x3A, "55"),                             # COLMOD: 16 bit/pixel
        (0x11, ""),                               # Sleep Out
        (0x29, ""),                               # Display On
        (0x2A, "0000013f"), (0x2B, "000000ef"),   # full window for the clear
        (0x2C, "1234" * (W * H)),                 # RAMWR, big-endian RGB565
    ]
    assert got == expected
    waits = {c: w for c, _, w in cmds}
    assert waits[0xC8] >= 120                     # reset -> first command (5 ms), -> SLPOUT 120 ms
    assert waits[0x29] >= 5                       # Sleep Out needs 5 ms before the next command
    assert waits[0x29] >= 120                     # ... and we give it the full 120 ms
    # The backlight comes on last, after the panel has been cleared.
    assert ev[-1] == ["bl", 1]


def test_windowed_write_and_bounds():
    ev = mpy(WIRE + """
EV.clear()
lcd.blit(10, 20, 3, 2, bytes(range(12)) + b"extra")
n = len(EV)
bad = []
for args in ((318, 0, 3, 1), (0, 239, 1, 2), (-1, 0, 1, 1)):
    try:
        lcd.blit(*args, bytearray(64))
    except ValueError:
        bad.append(args)
print(json.dumps([EV[:n], len(EV) == n, len(bad)]))
""")
    wire, nothing_sent, rejected = ev
    cmds, _ = transactions(wire)
    assert [(c, p.hex()) for c, p, _ in cmds] == [
        (0x2A, "000a000c"),       # columns 10..12
        (0x2B, "00140015"),       # rows 20..21
        (0x2C, bytes(range(12)).hex()),   # exactly w*h*2 bytes, nothing past it
    ]
    assert nothing_sent and rejected == 3


def test_real_board_wiring_with_fake_machine():
    out = mpy("""
import sys, json
LOG = []
class Pin:
    OUT = 1
    def __init__(self, n, mode=None, value=None):
        self.n = n; LOG.append(["pin", n, mode, value])
    def value(self, v=None):
        if v is not None: LOG.append(["set", self.n, v])
        return 0
class SPI:
    def __init__(self, id, **kw):
        LOG.append(["spi", id, kw["baudrate"], kw["polarity"], kw["phase"], kw["sck"].n, kw["mosi"].n,
                    kw.get("miso", "default")])
    def write(self, b): pass
class M:
    pass
M.Pin = Pin; M.SPI = SPI
sys.modules["machine"] = M
from firmware.display.esp_box_3_lcd import make_lcd
lcd = make_lcd()
print(json.dumps(LOG))
""")
    spi = [e for e in out if e[0] == "spi"]
    # SPI3 = machine.SPI(2), mode 0, SCLK 7, MOSI 6, and miso=None: left out, the esp32 port
    # would route its default MISO (GPIO37, used by the octal PSRAM) into the bus
    assert spi == [["spi", 2, 40000000, 0, 0, 7, 6, None]]
    pins = {e[1]: e[3] for e in out if e[0] == "pin" and e[2] == 1}
    assert pins[5] == 1 and pins[4] == 0                   # CS idle high, DC
    assert pins[48] == 0 and pins[47] == 0                 # reset released (active-high), backlight off
    sets = [e[1:] for e in out if e[0] == "set"]
    assert [s for s in sets if s[0] == 48] == [[48, 0], [48, 1], [48, 0]]
    assert sets[-1] == [47, 1]                             # backlight on (active-high) at the end


# -- the simulated panel itself ---------------------------------------------------------------------

def test_sim_panel_flags_what_the_controller_would_not_accept():
    out = mpy("""
import json
from firmware.display import sim_panel, ili9342 as C
p = sim_panel.SimPanel()
def cmd(c, params=b""):
    p.cs.value(0); p.dc.value(0); p.spi.write(bytes([c]))
    if params:
        p.dc.value(1); p.spi.write(params)
    p.cs.value(1)
res = {}
p.sleep_ms(200)
cmd(0xC0, b"\\x0e\\x0e")                  # extended command before the unlock
res["locked"] = list(p.errors); p.errors.clear()
cmd(0x2C); p.cs.value(0); p.dc.value(1); p.spi.write(b"\\x00\\x00"); p.cs.value(1)
res["colmod"] = list(p.errors); p.errors.clear()
cmd(0x3A, b"\\x55")
cmd(0x2A, b"\\x00\\x00\\x01\\x40")       # column 320: one past the edge
res["window"] = list(p.errors); p.errors.clear()
cmd(0x2A, b"\\x00\\x00\\x00\\x01"); cmd(0x2B, b"\\x00\\x00\\x00\\x00")
cmd(0x2C, b"\\xf8\\x00" * 3)             # 3 pixels into a 2-pixel window
res["overflow"] = list(p.errors); p.errors.clear()
p.spi.write(b"\\x00")                      # CS high
res["cs"] = list(p.errors); p.errors.clear()
cmd(0x11)
cmd(0x29)                                  # right after Sleep Out, no 5 ms wait
res["slpout"] = list(p.errors); p.errors.clear()
# MADCTL 0 on this mirrored glass: controller (0,0) shows at the viewer's bottom-right corner.
p.sleep_ms(10)
cmd(0x36, b"\\x00"); cmd(0x2A, b"\\x00\\x00\\x00\\x00"); cmd(0x2B, b"\\x00\\x00\\x00\\x00")
cmd(0x2C, b"\\xf8\\x00")
res["corner"] = [p.pixel(319, 239), p.pixel(0, 0)]
cmd(0x36, b"\\xc0")                        # MY|MX, RGB order on this BGR glass: red shows blue
cmd(0x2C, b"\\xf8\\x00")
res["bgr"] = p.pixel(0, 0)
cmd(0x36, b"\\xc8")                        # MY|MX|BGR, as esp-bsp sets it: red is red
cmd(0x2C, b"\\xf8\\x00")
res["rgb_ok"] = p.pixel(0, 0)
# Reset held active (high on this board): the controller ignores the bus.
p.rst.value(1); cmd(0x29)
res["reset"] = [list(p.errors), p.in_reset]
print(json.dumps(res))
""")
    assert "before the EXTC unlock" in out["locked"][0]
    assert "COLMOD" in out["colmod"][0]
    assert "outside the panel" in out["window"][0]
    assert "overflows" in out["overflow"][0]
    assert "CS deasserted" in out["cs"][0]
    assert "5 ms after Sleep Out" in out["slpout"][0]
    assert out["corner"] == [0x001F, 0]      # MADCTL 0 (RGB order) on the BGR glass: blue
    assert out["bgr"] == 0x001F
    assert out["rgb_ok"] == 0xF800
    assert out["reset"][1] and "reset" in out["reset"][0][0]


# -- screens rendered to PNG -------------------------------------------------------------------

LONG = ("A very long message from the server that goes on and on, with a URL "
        "https://example.com/a/really/long/path/that/does/not/fit/on/one/line?device=abcdef "
        "and more words after it so that it certainly needs truncating somewhere " * 3)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("shots"))
    out = mpy(setup(d) + "LONG = %r\n" % LONG + """
res = {"shots": {}, "overflows": {}}
def shot(name):
    res["shots"][name] = d.screenshot(name)
    res["overflows"][name] = lr.overflows
d.show_booting("connecting to MyWifi", "http://192.168.1.10:8000/xiaozhi/ota/", "1.0.0"); shot("booting")
d.show_activation("123456", "Log in to xiaozhi.me and enter the code", "https://xiaozhi.me"); shot("act1")
d.show_activation("908172", "\\u8bf7\\u767b\\u5f55\\u63a7\\u5236\\u9762\\u677f xiaozhi.me \\u8f93\\u5165"); shot("act2")
d.show_checking("http://192.168.1.10:8000/xiaozhi/ota/", "1.0.0"); shot("checking")
for p in (0, 37, 100):
    d.show_updating(p, 123.4, "1.0.0", "1.2.0"); shot("upd%d" % p)
d.show_success("Updated to 1.2.0, restarting"); shot("success")
d.show_failure("md5 mismatch", "retrying in 60 s"); shot("failure")
d.show_idle("1.2.0", "Listening for updates"); shot("idle")
d.show_failure(LONG, LONG); shot("long_failure")
d.show_booting(LONG, LONG); shot("long_booting")
d.show_activation("12345678901234567890123456789", LONG, LONG); shot("long_activation")
d.show_idle("v" * 200, LONG); shot("long_idle")
d.show_updating(50, 123456.7, "1" * 60, "2" * 60); shot("long_updating")
d.show_success(LONG); shot("long_success")
res["errors"] = panel.errors
res["cells6"] = screens.code_cells(6)
print(json.dumps(res))
""")
    out["imgs"] = {k: decode_png(v) for k, v in out["shots"].items()}
    return out


def test_screenshots_are_valid_pngs_with_nothing_outside_the_panel(shots, consts):
    assert shots["errors"] == []                          # no out-of-window / overflow writes
    for name, path in shots["shots"].items():
        assert path.endswith("/%s.png" % name) and os.path.exists(path)
        w, h, rows = shots["imgs"][name]
        assert (w, h) == (W, H)
        assert shots["overflows"][name] == 0, name        # every text/box fits its region
    # Orientation: the header band is at the top, the footer background at the bottom.
    act = shots["imgs"]["act1"]
    assert px(act, 0, 0) == rgb888(consts["AMBER"])
    assert px(act, 0, H - 1) == rgb888(consts["BG"])


def glyph_matches(img, cell, bits, fg, cell_bg, bg):
    """Every pixel of the scaled 8x8 glyph square: lit font pixels are fg, unlit ones show the
    digit box (or the screen background where the square overhangs the box)."""
    bx, by, bw, bh, gx, gy, s = cell
    for row in range(8):
        for col in range(8):
            for dy in range(s):
                for dx in range(s):
                    x, y = gx + col * s + dx, gy + row * s + dy
                    if bits[row] & (0x80 >> col):
                        want = fg
                    else:
                        want = cell_bg if bx <= x < bx + bw and by <= y < by + bh else bg
                    if px(img, x, y) != want:
                        return False
    return True


@pytest.mark.parametrize("name,code", [("act1", "123456"), ("act2", "908172")])
def test_activation_digits_match_the_code(shots, font, consts, name, code):
    img = shots["imgs"][name]
    fg, cell_bg, bg = rgb888(consts["FG"]), rgb888(consts["CELL"]), rgb888(consts["BG"])
    cells = shots["cells6"]
    assert len(cells) == 6
    for i, cell in enumerate(cells):
        bx, by, bw, bh, gx, gy, s = cell
        assert s >= 5                                      # large: at least 40 px glyphs
        assert 0 <= bx and bx + bw <= W
        # Exactly the expected digit, scaled from the framebuf font; no other digit matches.
        matches = [d for d in "0123456789" if glyph_matches(img, cell, font[d], fg, cell_bg, bg)]
        assert matches == [code[i]], (i, matches)


def test_progress_bar_width_matches_percent(shots, consts):
    fill, track = rgb888(consts["FILL"]), rgb888(consts["TRACK"])
    x0, bw = consts["BAR_X"], consts["BAR_W"]
    for p in (0, 37, 100):
        img = shots["imgs"]["upd%d" % p]
        for y in (consts["BAR_Y"], consts["BAR_Y"] + consts["BAR_H"] // 2, consts["BAR_Y"] + consts["BAR_H"] - 1):
            row = [px(img, x, y) for x in range(x0, x0 + bw)]
            filled = sum(1 for c in row if c == fill)
            assert filled == bw * p // 100, (p, filled)
            assert row == [fill] * filled + [track] * (bw - filled)
            assert px(img, x0 - 1, y) != fill and px(img, x0 + bw, y) != fill


def test_non_ascii_degrades_and_long_text_is_cut_not_clipped():
    out = mpy("""
import json
from firmware.display import text, screens
r = {}
r["clean"] = [text.clean("caf\\u00e9 \\u9a8c\\u8bc1\\u7801 ok"), text.clean("a\\u2014b\\tc"), text.clean(None)]
r["wrap"] = text.wrap("one two three four five six", 9, 2)
r["url"] = text.wrap("see https://example.com/abcdefghijklmnop", 12, 5)
r["trunc"] = [text.trunc("abcdefghij", 8), text.trunc("abc", 8)]
r["fit"] = [text.fit("short", 300, 36), text.fit("http://192.168.1.10:8000/xiaozhi/ota/", 300, 58)]
# Every screen, fed absurd input, keeps all ops inside their regions, and the regions tile the panel.
bad = []
for kind in screens.LAYOUTS:
    f = {"wifi": "x" * 500, "server": "\\u4e2d" * 300, "code": "9" * 40, "message": "m " * 400,
         "url": "u" * 300, "percent": 250, "rate_kib_s": 1e9, "from_v": "f" * 99, "to_v": "t" * 99,
         "text": "w" * 999, "reason": "r " * 300, "next_action": "n" * 300, "version": "v" * 99,
         "detail": "d" * 300}
    regs = screens.layout(kind, f)
    cover = bytearray(320 * 240)
    for (x, y, w, h, bg, ops) in regs:
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                cover[yy * 320 + xx] += 1
        for op in ops:
            if op[0] == "t":
                ow, oh = len(op[3]) * 8 * op[5], 8 * op[5]
                if any(ord(c) > 126 or ord(c) < 32 for c in op[3]):
                    bad.append([kind, "non-ascii"])
            else:
                ow, oh = op[3], op[4]
            if op[1] < 0 or op[2] < 0 or op[1] + ow > w or op[2] + oh > h:
                bad.append([kind, op[0], op[1], op[2], ow, oh, w, h])
    if min(cover) != 1 or max(cover) != 1:
        bad.append([kind, "tiling", min(cover), max(cover)])
r["bad"] = bad
print(json.dumps(r))
""")
    assert out["clean"] == ["caf? ? ok", "a-b c", ""]
    assert out["wrap"] == [["one two", "three..."], True]
    assert out["url"] == [["see", "https://exam", "ple.com/abcd", "efghijklmnop"], False]
    assert out["trunc"] == ["abcde...", "abc"]
    assert out["fit"][0] == [2, ["short"]]
    assert out["fit"][1] == [1, ["http://192.168.1.10:8000/xiaozhi/ota/"]]   # no word broken at x2
    assert out["bad"] == []


# -- change-only pushes --------------------------------------------------------------------------

def test_progress_updates_push_only_the_bar_and_numbers(tmp_path):
    out = mpy(setup(tmp_path) + """
import time
res = {}
d.show_updating(37, 100.0, "1.0.0", "1.2.0")
res["first"] = lr.pushed
panel.clear_log()
d.show_updating(38, 100.0, "1.0.0", "1.2.0")
res["tick"] = lr.pushed
res["ramwr"] = sum(e[1] for e in panel.log if e[0] == "ramwr")
panel.clear_log()
d.show_updating(38.6, 100.04, "1.0.0", "1.2.0")        # same whole percent: nothing at all
res["same"] = [e for e in panel.log if e[0] == "ramwr"]
d.show_failure("md5 mismatch", "retry")
res["switch"] = lr.pushed
d.show_failure("md5 mismatch", "retry in 60 s")
res["next_only"] = lr.pushed
res["errors"] = panel.errors
print(json.dumps(res))
""")
    assert len(out["first"]) == 5                                   # a new screen: everything
    bar, stats = [0, 86, 320, 40], [0, 126, 320, 90]
    assert out["tick"] == [bar, stats]
    assert out["ramwr"] == 320 * (40 + 90) * 2                      # and nothing else reached the glass
    assert out["same"] == []
    assert [0, 0, 320, 36] in out["switch"]
    assert out["next_only"] == [[0, 136, 320, 80]]
    assert out["errors"] == []


# -- memory: a band, never a frame ----------------------------------------------------------------

def test_largest_allocation_is_a_band_buffer():
    out = mpy("""
import gc, json
from firmware.display import Display
from firmware.display.ili9342 import ILI9342
from firmware.display.lcd_renderer import LcdRenderer
class Null:
    def write(self, b): pass
    def value(self, v=None): return 0
n = Null()
lcd = ILI9342(n, n, n, n, n, sleep_ms=lambda ms: None)
lcd.init()
L = "Please log in to the control panel at xiaozhi.me and enter the code shown below"
calls = [
    lambda d: d.show_booting("connecting to MyWifi", "http://192.168.1.10:8000/xiaozhi/ota/"),
    lambda d: d.show_activation("123456", L, "https://xiaozhi.me/console"),
    lambda d: d.show_checking("http://192.168.1.10:8000/xiaozhi/ota/", "1.0.0"),
    lambda d: d.show_updating(37, 100.0, "1.0.0", "1.2.0"),
    lambda d: d.show_success("Updated to 1.2.0"),
    lambda d: d.show_failure("md5 mismatch", "retry in 60 s"),
    lambda d: d.show_idle("1.2.0", "Listening for updates"),
]
res = {"full": []}
for c in calls:
    gc.collect()
    gc.disable()           # nothing is reclaimed: the growth is the sum of every allocation made
    a = gc.mem_alloc()
    lr = LcdRenderer(lcd)
    c(Display([lr], strict=True))
    res["full"].append(gc.mem_alloc() - a)
    gc.enable()
    res["band"] = len(lr.band)
d = Display([lr], strict=True)
d.show_updating(1, 1.0, "a", "b")
gc.collect(); gc.disable()
a = gc.mem_alloc()
for p in range(2, 101):
    d.show_updating(p, 1.0 + p, "a", "b")
res["ticks"] = (gc.mem_alloc() - a) // 99
gc.enable()
print(json.dumps(res))
""")
    band = out["band"]
    assert band == W * 16 * 2 and band < W * H * 2 // 8
    for total in out["full"]:
        # Creating the renderer and painting a whole screen allocates the band plus small
        # objects, in all: so no single allocation (and no peak) comes near a 150 KiB frame.
        assert band < total <= band + 12 * 1024, out["full"]
    assert out["ticks"] <= 4 * 1024


# -- console renderer and the Display front ----------------------------------------------------------

def test_console_renderer_logs_state_changes():
    out = mpy("""
import json
from firmware.display import Display
from firmware.display.console import ConsoleRenderer
lines = []
d = Display([ConsoleRenderer(lines.append)], strict=True)
d.show_booting("connecting", "http://srv/ota/")
d.show_booting("connecting", "http://srv/ota/")
d.show_activation("123456", "Enter the code at xiaozhi.me")
for p in range(0, 101):
    d.show_updating(p, 50.0, "1.0.0", "1.1.0")
d.show_failure("server down", "retry in 30 s")
d.show_idle("1.1.0")
print(json.dumps([lines, d.screenshot("none")]))
""")
    lines, shot = out
    assert lines[0] == "starting | wifi: connecting | server: http://srv/ota/"
    assert lines[1] == "activation code 123456 | Enter the code at xiaozhi.me"
    upd = [ln for ln in lines if ln.startswith("updating")]
    assert upd[0] == "updating 1.0.0 -> 1.1.0 | 0% | 50.0 KiB/s"
    assert [ln.split(" | ")[1] for ln in upd] == ["%d%%" % p for p in range(0, 101, 10)]
    assert lines[-2:] == ["failure | server down | next: retry in 30 s", "idle | running 1.1.0"]
    assert shot is None                                   # no panel, no screenshot


def test_autoshot_and_blank_when_backlight_off(tmp_path, consts):
    d = str(tmp_path / "a" / "b")
    out = mpy(setup(d) + """
d.autoshot = True
d.show_checking("srv")
d.show_checking("srv2")
d.show_idle("1.0.0")
lcd.backlight(False)
dark = d.screenshot("dark")
print(json.dumps([d.shots, dark]))
""")
    shots, dark = out
    assert shots == [d + "/checking.png", d + "/idle.png"]
    assert px(decode_png(shots[1]), 0, 0) == rgb888(consts["BLUE"])     # idle header, lit
    img = decode_png(dark)
    assert all(px(img, x, y) == (0, 0, 0) for x in range(0, W, 7) for y in range(0, H, 7))


def test_red_rectangle_renders_red(tmp_path):
    """The board's driver settings (MADCTL 0xC8: mirrored, BGR order) on the simulated BGR glass:
    a red RGB565 rectangle must come out red in the screenshot, not blue."""
    path = str(tmp_path / "red.png")
    mpy("""
from firmware.display import sim_panel
lcd = sim_panel.make_lcd()
red = bytearray(b"\\xf8\\x00" * (40 * 20))
lcd.blit(10, 30, 40, 20, red)
lcd.panel.save_png(%r)
print("null")
""" % path)
    img = decode_png(path)
    assert px(img, 29, 39) == (255, 0, 0)        # inside the rectangle: red
    assert px(img, 5, 5) == (0, 0, 0)            # outside: the black clear
