# Text for the built-in 8x8 framebuf font: make strings printable, wrap/truncate them to a box,
# and draw them scaled up (the font has one size; big digits are its glyphs blown up).
import framebuf

GLYPH = 8          # font cell, pixels at scale 1
LINE = 10          # line pitch at scale 1: glyph + 2 px gap

# Common non-ASCII punctuation with an obvious ASCII stand-in (server messages use them).
_SUBST = {
    "\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2026": "...", "\u2192": "->", "\u00a0": " ", "\u3000": " ", "\uff1a": ":",
    "\uff0c": ",", "\u3002": ".", "\uff01": "!", "\uff08": "(", "\uff09": ")", "\u00b7": ".",
}


def clean(s):
    """Printable ASCII: the font has nothing else. A run of other characters becomes one '?',
    tabs/CR become spaces, newlines are kept as paragraph breaks."""
    if s is None:
        return ""
    if not isinstance(s, str):
        s = str(s)
    for ch in s:                      # common case: already clean, no allocation
        o = ord(ch)
        if (o < 32 or o > 126) and ch != "\n":
            break
    else:
        return s
    out = []
    bad = False
    for ch in s:
        o = ord(ch)
        if 32 <= o < 127 or ch == "\n":
            out.append(ch)
            bad = False
        elif ch == "\t" or ch == "\r":
            out.append(" ")
            bad = False
        elif ch in _SUBST:
            out.append(_SUBST[ch])
            bad = False
        elif not bad:
            out.append("?")
            bad = True
    return "".join(out)


def trunc(s, cols):
    """At most `cols` characters; a cut is shown with '...'."""
    if len(s) <= cols:
        return s
    if cols <= 3:
        return s[:max(cols, 0)]
    return s[:cols - 3].rstrip() + "..."


def wrap(s, cols, max_lines):
    """Word-wrap cleaned text into at most max_lines lines of at most cols characters (words
    longer than a line, e.g. URLs, get lines of their own, hard-broken). Returns (lines, cut)."""
    return _wrap([p.split() for p in s.split("\n")], cols, max_lines)


def _wrap(paras, cols, max_lines):
    if cols < 1 or max_lines < 1:
        return [], any(paras)
    lines = []
    for words in paras:
        i = 0
        off = 0                       # how much of words[i] earlier lines already took
        n = len(words)
        while i < n and len(lines) <= max_lines:
            w = words[i][off:] if off else words[i]
            if len(w) > cols:
                lines.append(w[:cols])
                off += cols
                continue
            off = 0
            used = len(w)
            j = i + 1
            while j < n and used + 1 + len(words[j]) <= cols:
                used += 1 + len(words[j])
                j += 1
            if j == i + 1:
                lines.append(w)
            elif w is words[i]:
                lines.append(" ".join(words[i:j]))
            else:
                lines.append(w + " " + " ".join(words[i + 1:j]))
            i = j
        if len(lines) > max_lines:
            break
    if len(lines) <= max_lines:
        return lines, False
    del lines[max_lines:]
    last = lines[-1]
    if cols <= 3:
        lines[-1] = last[:cols]
    else:
        lines[-1] = (last[:cols - 3].rstrip() if len(last) + 3 > cols else last) + "..."
    return lines, True


def lines_fit(height, scale):
    """How many lines of `scale` fit in `height` pixels (no gap needed after the last)."""
    return (height + 2 * scale) // (LINE * scale)


def fit(s, width, height, scales=(2, 1)):
    """Largest scale (from `scales`, biggest first) at which cleaned `s` fits the box without
    being cut or breaking a word; else the smallest scale, cut. Returns (scale, lines)."""
    paras = [p.split() for p in clean(s).split("\n")]
    longest = 0
    for words in paras:
        for w in words:
            if len(w) > longest:
                longest = len(w)
    for scale in scales:
        cols = width // (GLYPH * scale)
        lines, cut = _wrap(paras, cols, lines_fit(height, scale))
        if not cut and longest <= cols:
            return scale, lines
    return scale, lines


# One 8x8 glyph at a time, reused: scaling needs the font's bits, framebuf only draws them.
_gbuf = bytearray(GLYPH)
_gfb = framebuf.FrameBuffer(_gbuf, GLYPH, GLYPH, framebuf.MONO_HLSB)


def draw(fb, s, x, y, color, scale=1, fb_h=0x7FFF):
    """Draw s at (x, y); scale > 1 paints each lit font pixel as a scale x scale block, a run
    of lit pixels in a row as one rectangle. Rows outside 0..fb_h are skipped."""
    if scale == 1:
        fb.text(s, x, y, color)
        return
    for ch in s:
        if ch != " ":
            _gfb.fill(0)
            _gfb.text(ch, 0, 0, 1)
            yy = y
            for row in range(GLYPH):
                bits = _gbuf[row]
                if bits and yy + scale > 0 and yy < fb_h:
                    col = 0
                    while col < GLYPH:
                        if bits & (0x80 >> col):
                            start = col
                            while col < GLYPH and bits & (0x80 >> col):
                                col += 1
                            fb.fill_rect(x + start * scale, yy, (col - start) * scale, scale, color)
                        else:
                            col += 1
                yy += scale
        x += GLYPH * scale
