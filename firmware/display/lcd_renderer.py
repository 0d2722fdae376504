# Draws screen layouts on an LCD driver through one band buffer: each changed region is painted
# with framebuf a slice at a time and pushed with a windowed write. Regions identical to what is
# already on the glass are skipped, so the largest thing this ever holds is the band.
import sys

import framebuf

from firmware.display import screens, text

BAND_ROWS = 16          # full-width rows per band: 320 * 16 * 2 = 10 KiB

_SWAP = sys.byteorder == "little"   # framebuf stores native uint16; the panel wants big-endian


def _c(color):
    return ((color & 0xFF) << 8) | (color >> 8) if _SWAP else color


class LcdRenderer:
    def __init__(self, lcd, band_rows=BAND_ROWS):
        self.lcd = lcd
        self.band = bytearray(lcd.width * band_rows * 2)
        self._on_glass = {}     # (x, y, w, h) -> (bg, ops) last pushed there
        self.pushed = []        # regions pushed by the last show(), for diagnostics and tests
        self.bytes_pushed = 0
        self.overflows = 0      # ops that did not fit their region (a layout bug: text clipped)

    def show(self, kind, fields):
        self.draw(screens.layout(kind, fields))

    def draw(self, regions):
        seen = {}
        pushed = []
        for reg in regions:
            key = reg[:4]
            body = reg[4:]
            if self._on_glass.get(key) != body:
                self._paint(reg)
                pushed.append(key)
            seen[key] = body
        self._on_glass = seen
        self.pushed = pushed

    def screenshot(self, path):
        panel = self.lcd.panel
        if panel is None:
            return None
        return panel.save_png(path)

    def _check(self, w, h, ops):
        for op in ops:
            if op[0] == "t":
                ow = len(op[3]) * text.GLYPH * op[5]
                oh = text.GLYPH * op[5]
            else:
                ow = op[3]
                oh = op[4]
            if op[1] < 0 or op[2] < 0 or op[1] + ow > w or op[2] + oh > h:
                self.overflows += 1

    def _paint(self, reg):
        x, y, w, h, bg, ops = reg
        self._check(w, h, ops)
        rows = len(self.band) // (2 * w)
        bg = _c(bg)
        sy = 0
        while sy < h:
            sh = rows if rows < h - sy else h - sy
            fb = framebuf.FrameBuffer(self.band, w, sh, framebuf.RGB565)
            fb.fill(bg)
            for op in ops:
                k = op[0]
                oy = op[2] - sy
                if k == "t":
                    scale = op[5]
                    if oy < sh and oy + text.GLYPH * scale > 0:
                        text.draw(fb, op[3], op[1], oy, _c(op[4]), scale, sh)
                elif oy < sh and oy + op[4] > 0:
                    if k == "r":
                        fb.fill_rect(op[1], oy, op[3], op[4], _c(op[5]))
                    else:
                        fb.rect(op[1], oy, op[3], op[4], _c(op[5]))
            self.lcd.blit(x, y + sy, w, sh, self.band)
            self.bytes_pushed += w * sh * 2
            sy += sh
