# ILI9342C SPI LCD driver: reset/init, windowed RGB565 writes, backlight.
# Hardware-agnostic: takes an SPI-like object (write) and pin-like objects (value), so the same
# code drives the real panel and the simulated one. It never holds a frame: callers push bands.
import time

SWRESET = 0x01
SLPOUT = 0x11
DISPON = 0x29
CASET = 0x2A
RASET = 0x2B
RAMWR = 0x2C
MADCTL = 0x36
COLMOD = 0x3A
EXTC = 0xC8          # "set EXTC": FF 93 42 unlocks the extended (level 2) command set

MADCTL_MY = 0x80     # row address order (mirror Y)
MADCTL_MX = 0x40     # column address order (mirror X)
MADCTL_MV = 0x20     # row/column exchange
MADCTL_BGR = 0x08
COLMOD_16BIT = 0x55  # 16 bits/pixel on both the RGB and MCU interfaces

EXTC_KEY = b"\xff\x93\x42"


def madctl_value(mirror_x, mirror_y, bgr):
    return (MADCTL_MX if mirror_x else 0) | (MADCTL_MY if mirror_y else 0) | (MADCTL_BGR if bgr else 0)


class ILI9342:
    def __init__(self, spi, dc, cs=None, rst=None, bl=None, width=320, height=240,
                 mirror_x=True, mirror_y=True, bgr=False, rst_active=1, bl_active=1,
                 tuning=(), sleep_ms=None):
        self.spi = spi
        self.dc = dc
        self.cs = cs
        self.rst = rst
        self.bl = bl
        self.width = width
        self.height = height
        self.madctl = madctl_value(mirror_x, mirror_y, bgr)
        self.rst_active = 1 if rst_active else 0
        self.bl_active = 1 if bl_active else 0
        self.tuning = tuning
        self.sleep_ms = sleep_ms or time.sleep_ms
        self.panel = None          # the simulated panel, when there is one (screenshots)
        self._cmd = bytearray(1)   # reused: no allocation per command
        self._win = bytearray(4)
        if cs is not None:
            cs.value(1)
        if bl is not None:
            bl.value(1 - self.bl_active)

    # -- wire level --------------------------------------------------------------------------
    def command(self, cmd, params=None):
        """One command byte (DC low) and its parameters (DC high) in one chip-select frame."""
        cs = self.cs
        if cs is not None:
            cs.value(0)
        self.dc.value(0)
        self._cmd[0] = cmd
        self.spi.write(self._cmd)
        if params:
            self.dc.value(1)
            self.spi.write(params)
        if cs is not None:
            cs.value(1)

    def _window(self, x0, y0, x1, y1):
        w = self._win
        w[0] = x0 >> 8
        w[1] = x0 & 0xFF
        w[2] = x1 >> 8
        w[3] = x1 & 0xFF
        self.command(CASET, w)
        w[0] = y0 >> 8
        w[1] = y0 & 0xFF
        w[2] = y1 >> 8
        w[3] = y1 & 0xFF
        self.command(RASET, w)

    # -- bring-up ----------------------------------------------------------------------------
    def reset(self):
        """Hardware reset when the pin exists (polarity from the board), else software reset.
        The controller needs 5 ms before commands and 120 ms before Sleep Out."""
        if self.rst is not None:
            self.rst.value(1 - self.rst_active)
            self.sleep_ms(1)
            self.rst.value(self.rst_active)
            self.sleep_ms(10)
            self.rst.value(1 - self.rst_active)
        else:
            self.command(SWRESET)
        self.sleep_ms(120)

    def init(self, clear=0x0000):
        """Reset, unlock, tune, orient, 16-bit colour, wake, clear, then light the backlight
        (lit last, so nobody sees the power-on garbage)."""
        self.reset()
        self.command(EXTC, EXTC_KEY)
        for cmd, params in self.tuning:
            self.command(cmd, params)
        self._cmd1(MADCTL, self.madctl)
        self._cmd1(COLMOD, COLMOD_16BIT)
        self.command(SLPOUT)
        self.sleep_ms(120)
        self.command(DISPON)
        self.sleep_ms(20)
        if clear is not None:
            self.fill(clear)
        self.backlight(True)

    def _cmd1(self, cmd, value):
        b = bytearray(1)
        b[0] = value
        self.command(cmd, b)

    def backlight(self, on):
        if self.bl is not None:
            self.bl.value(self.bl_active if on else 1 - self.bl_active)

    # -- pixels ------------------------------------------------------------------------------
    def blit(self, x, y, w, h, buf):
        """Write w*h big-endian RGB565 pixels from buf into the window at (x, y)."""
        if w <= 0 or h <= 0:
            return
        if x < 0 or y < 0 or x + w > self.width or y + h > self.height:
            raise ValueError("window outside the panel")
        n = w * h * 2
        if len(buf) < n:
            raise ValueError("buffer too small")
        cs = self._begin_ram_write(x, y, x + w - 1, y + h - 1)
        self.spi.write(buf if len(buf) == n else memoryview(buf)[:n])
        if cs is not None:
            cs.value(1)

    def _begin_ram_write(self, x0, y0, x1, y1):
        """Set the window and send RAMWR; pixel data follows with DC high. Returns CS to release."""
        self._window(x0, y0, x1, y1)
        cs = self.cs
        if cs is not None:
            cs.value(0)
        self.dc.value(0)
        self._cmd[0] = RAMWR
        self.spi.write(self._cmd)
        self.dc.value(1)
        return cs

    def fill(self, color):
        """Fill the whole panel with one RGB565 colour, streaming one row buffer."""
        row = bytearray(self.width * 2)
        hi = color >> 8
        lo = color & 0xFF
        for i in range(0, len(row), 2):
            row[i] = hi
            row[i + 1] = lo
        cs = self._begin_ram_write(0, 0, self.width - 1, self.height - 1)
        for _ in range(self.height):
            self.spi.write(row)
        if cs is not None:
            cs.value(1)
