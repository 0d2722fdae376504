# Simulated ESP-BOX-3 glass + ILI9342C controller for the unix port. It listens on a fake SPI
# bus and fake pins, decodes the command stream like the controller would, keeps the picture a
# person would see (150 KiB here stands for the panel's own memory, not the driver's), logs what
# it received and flags anything the real controller would not accept.
import time

from firmware.board import esp_box_3 as hw
from firmware.display import ili9342 as C
from firmware.display.png import write_rgb565

LOG_LIMIT = 256
ERROR_LIMIT = 100
_EXTENDED_MIN = 0xB0       # level 2 commands (B0..FF) need the EXTC unlock, except EXTC itself
_READ_CMDS = (0xD3, 0xDA, 0xDB, 0xDC)
# The glass's colour filter runs B-G-R (esp-bsp drives this panel with LCD_RGB_ELEMENT_ORDER_BGR,
# bsp/esp-box-3/include/bsp/display.h:35). MADCTL bit 3 tells the controller the filter order
# (ILI9341/ILI9342 datasheets, MADCTL: "0 = RGB color filter panel, 1 = BGR"): when it does not
# match the glass, red lands on blue sub-pixels. A fact of the glass, kept apart from the
# driver's LCD_BGR setting on purpose, so a wrong setting shows in the screenshots.
GLASS_BGR = True


class SimPin:
    def __init__(self, panel, name, level=0):
        self._panel = panel
        self._name = name
        self._level = level

    def value(self, v=None):
        if v is None:
            return self._level
        v = 1 if v else 0
        if v != self._level:
            self._level = v
            self._panel._pin_changed(self._name, v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class SimSPI:
    def __init__(self, panel):
        self._panel = panel

    def write(self, buf):
        self._panel._spi_write(buf)


class SimPanel:
    def __init__(self, width=hw.LCD_WIDTH, height=hw.LCD_HEIGHT, rst_active=hw.LCD_RST_ACTIVE,
                 bl_on=hw.LCD_BACKLIGHT_ON, mount_mirror_x=hw.LCD_MIRROR_X,
                 mount_mirror_y=hw.LCD_MIRROR_Y, glass_bgr=GLASS_BGR):
        self.width = width
        self.height = height
        self.rst_active = rst_active
        self.bl_on = bl_on
        self.mount_mirror_x = mount_mirror_x
        self.mount_mirror_y = mount_mirror_y
        self.glass_bgr = glass_bgr
        self.gram = bytearray(width * height * 2)   # as seen by a viewer, big-endian RGB565
        self.log = []          # ("rst"|"bl", level) ("cmd", code, params) ("ramwr", nbytes) ("wait", ms)
        self.log_dropped = 0
        self.errors = []
        self.pixels_written = 0
        self._virtual_ms = 0
        self.spi = SimSPI(self)
        self.cs = SimPin(self, "cs", 1)
        self.dc = SimPin(self, "dc", 0)
        self.rst = SimPin(self, "rst", 1 - rst_active)
        self.bl = SimPin(self, "bl", 1 - bl_on)
        self.in_reset = False
        self._power_on_reset()

    # -- clock: real time plus the time the driver slept through us --------------------------
    def now_ms(self):
        return time.ticks_ms() + self._virtual_ms

    def sleep_ms(self, ms):
        """The driver's delay: virtual, so the simulator boots instantly but timing is checked."""
        self._virtual_ms += ms
        self._record(("wait", ms))

    # -- controller state -------------------------------------------------------------------
    def _power_on_reset(self):
        self.sleeping = True
        self.display_on = False
        self.unlocked = False
        self.madctl = 0
        self.colmod = 0x66      # 18-bit after reset: 16-bit pixels need COLMOD first
        self.col = (0, self.width - 1)
        self.row = (0, self.height - 1)
        self._cmd = None
        self._params = bytearray()
        self._ramwr_bytes = 0
        self._odd = None
        self._full = False
        self._reset_at = self.now_ms()
        self._slpout_at = None

    def visible(self):
        return (self.bl.value() == self.bl_on and self.display_on and not self.sleeping
                and not self.in_reset)

    def _record(self, entry):
        if len(self.log) >= LOG_LIMIT:
            drop = LOG_LIMIT // 2
            del self.log[:drop]
            self.log_dropped += drop
        self.log.append(entry)

    def _error(self, msg):
        if len(self.errors) < ERROR_LIMIT:
            self.errors.append(msg)

    def clear_log(self):
        self.log = []
        self.log_dropped = 0

    # -- pins --------------------------------------------------------------------------------
    def _pin_changed(self, name, level):
        if name == "rst":
            self._record(("rst", level))
            if level == self.rst_active:
                self._end_command()
                self.in_reset = True
            elif self.in_reset:
                self.in_reset = False
                self._power_on_reset()
        elif name == "bl":
            self._record(("bl", level))
        elif name == "cs" and level == 1:
            self._end_command()

    # -- bus ---------------------------------------------------------------------------------
    def _spi_write(self, buf):
        if self.cs.value():
            self._error("SPI write with CS deasserted (%d bytes ignored)" % len(buf))
            return
        if self.in_reset:
            self._error("SPI write while the controller is held in reset")
            return
        if self.dc.value() == 0:
            for b in buf:
                self._end_command()
                self._begin_command(b)
            return
        if self._cmd is None:
            self._error("parameter bytes without a command")
        elif self._cmd == C.RAMWR:
            self._pixels(buf)
        else:
            self._params.extend(buf)

    def _begin_command(self, cmd):
        t = self.now_ms()
        if time.ticks_diff(t, self._reset_at) < 5:
            self._error("command 0x%02X less than 5 ms after reset" % cmd)
        if self._slpout_at is not None and time.ticks_diff(t, self._slpout_at) < 5:
            self._error("command 0x%02X less than 5 ms after Sleep Out" % cmd)
        if cmd >= _EXTENDED_MIN and cmd != C.EXTC and cmd not in _READ_CMDS and not self.unlocked:
            self._error("extended command 0x%02X before the EXTC unlock" % cmd)
        self._cmd = cmd
        self._params = bytearray()
        self._ramwr_bytes = 0
        self._odd = None
        self._full = False
        if cmd == C.RAMWR:
            self._cur_c = self.col[0]
            self._cur_r = self.row[0]
            if self.colmod & 0x0F != 0x05:
                self._error("pixels written while COLMOD is not 16-bit (0x%02X)" % self.colmod)

    def _end_command(self):
        cmd = self._cmd
        if cmd is None:
            return
        self._cmd = None
        if cmd == C.RAMWR:
            if self._odd is not None:
                self._error("RAMWR ended on half a pixel")
            self._record(("ramwr", self._ramwr_bytes))
            return
        p = bytes(self._params)
        self._record(("cmd", cmd, p))
        self._apply(cmd, p)

    def _apply(self, cmd, p):
        t = self.now_ms()
        if cmd == C.SWRESET:
            self._power_on_reset()
        elif cmd == C.SLPOUT:
            if time.ticks_diff(t, self._reset_at) < 120:
                self._error("Sleep Out less than 120 ms after reset")
            self.sleeping = False
            self._slpout_at = t
        elif cmd == 0x10:
            self.sleeping = True
        elif cmd == C.DISPON:
            self.display_on = True
        elif cmd == 0x28:
            self.display_on = False
        elif cmd == C.EXTC:
            self.unlocked = p == C.EXTC_KEY
        elif cmd == C.MADCTL and len(p) == 1:
            self.madctl = p[0]
            if p[0] & C.MADCTL_MV:
                self._error("MADCTL row/column exchange: not how this panel is mounted")
        elif cmd == C.COLMOD and len(p) == 1:
            self.colmod = p[0]
        elif cmd in (C.CASET, C.RASET):
            if len(p) != 4:
                self._error("0x%02X needs 4 parameter bytes, got %d" % (cmd, len(p)))
                return
            s = (p[0] << 8) | p[1]
            e = (p[2] << 8) | p[3]
            limit = self.width if cmd == C.CASET else self.height
            if s > e or e >= limit:
                self._error("window %s %d..%d outside the panel (0..%d)"
                            % ("columns" if cmd == C.CASET else "rows", s, e, limit - 1))
                e = min(e, limit - 1)
                s = min(s, e)
            if cmd == C.CASET:
                self.col = (s, e)
            else:
                self.row = (s, e)

    # -- pixel stream ------------------------------------------------------------------------
    def _pixels(self, buf):
        n = len(buf)
        self._ramwr_bytes += n
        mv = memoryview(buf)
        i = 0
        if self._odd is not None:
            self._put(bytes((self._odd, buf[0])), 0, 1)
            self._odd = None
            i = 1
        while n - i >= 2:
            # Copy what fits in the current window row in one go.
            k = min((n - i) // 2, self.col[1] - self._cur_c + 1)
            self._put(mv, i, k)
            i += 2 * k
        if i < n:
            self._odd = buf[i]

    def _put(self, src, i, k):
        if self._full:
            self._full = False
            self._error("RAMWR data overflows the %dx%d window"
                        % (self.col[1] - self.col[0] + 1, self.row[1] - self.row[0] + 1))
        c0 = self._cur_c
        r = self._cur_r
        W = self.width
        # Controller address -> glass position (MX/MY) -> what the viewer sees (mounting).
        mx = bool(self.madctl & C.MADCTL_MX) != bool(self.mount_mirror_x)
        my = bool(self.madctl & C.MADCTL_MY) != bool(self.mount_mirror_y)
        vy = (self.height - 1 - r) if my else r
        g = self.gram
        bgr = bool(self.madctl & C.MADCTL_BGR) != bool(self.glass_bgr)  # red/blue swapped
        if not mx and not bgr:
            d = (vy * W + c0) * 2
            g[d:d + 2 * k] = src[i:i + 2 * k]
        else:
            for j in range(k):
                c = c0 + j
                vx = (W - 1 - c) if mx else c
                d = (vy * W + vx) * 2
                hi = src[i + 2 * j]
                lo = src[i + 2 * j + 1]
                if bgr:   # filter order mismatch: red and blue swap
                    v = (hi << 8) | lo
                    v = ((v & 0x1F) << 11) | (v & 0x07E0) | (v >> 11)
                    hi = v >> 8
                    lo = v & 0xFF
                g[d] = hi
                g[d + 1] = lo
        self.pixels_written += k
        c = c0 + k
        if c > self.col[1]:
            c = self.col[0]
            r += 1
            if r > self.row[1]:        # window full: the controller wraps to its start
                self._full = True
                r = self.row[0]
        self._cur_c = c
        self._cur_r = r

    # -- output ------------------------------------------------------------------------------
    def pixel(self, x, y):
        """The RGB565 value a viewer sees at (x, y)."""
        d = (y * self.width + x) * 2
        return (self.gram[d] << 8) | self.gram[d + 1]

    def save_png(self, path):
        """What a person would see: the picture, or black when the backlight/display is off."""
        if self.visible():
            return write_rgb565(path, self.width, self.height, self.gram)
        return write_rgb565(path, self.width, self.height, None)


def make_lcd(panel=None, init=True):
    """An ILI9342 driver wired to a simulated ESP-BOX-3 panel, exactly as make_lcd() wires the
    real one (same board constants), with the panel's virtual delays."""
    if panel is None:
        panel = SimPanel()
    lcd = C.ILI9342(panel.spi, dc=panel.dc, cs=panel.cs, rst=panel.rst, bl=panel.bl,
                    width=hw.LCD_WIDTH, height=hw.LCD_HEIGHT, mirror_x=hw.LCD_MIRROR_X,
                    mirror_y=hw.LCD_MIRROR_Y, bgr=hw.LCD_BGR, rst_active=hw.LCD_RST_ACTIVE,
                    bl_active=hw.LCD_BACKLIGHT_ON, tuning=hw.LCD_PANEL_TUNING,
                    sleep_ms=panel.sleep_ms)
    lcd.panel = panel
    if init:
        lcd.init()
    return lcd
