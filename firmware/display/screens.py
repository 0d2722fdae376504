# Screen layouts for a 320x240 panel. A screen is a list of regions that tile the panel exactly:
#   (x, y, w, h, background, ops)    ops in region coordinates:
#   ("t", x, y, text, color, scale)   ("r", x, y, w, h, color) filled   ("o", ...) outline
# Regions are plain data so a renderer can compare them with what it drew last time and push
# only the ones that changed (a progress tick touches the bar and the numbers, nothing else).
from firmware.display.text import GLYPH, LINE, clean, trunc, fit

W = 320
H = 240
M = 10                  # side margin
HEAD_H = 36
FOOT_Y = 216
FOOT_H = H - FOOT_Y


def rgb(r, g, b):
    """RGB565 of an 8-bit colour."""
    return ((r & 0xF8) << 8) | ((g & 0xFC) << 3) | (b >> 3)


BG = rgb(12, 18, 32)
FG = rgb(255, 255, 255)
DIM = rgb(150, 160, 176)
CELL = rgb(36, 48, 80)
TRACK = rgb(48, 56, 72)
FILL = rgb(0, 200, 110)
BLUE = rgb(24, 88, 200)
AMBER = rgb(200, 120, 0)
GREEN = rgb(0, 140, 60)
RED = rgb(190, 30, 30)

# Activation code cells: the code's strip and the gap between digit boxes.
CODE_Y = 62
CODE_H = 64
CODE_GAP = 4
CODE_MAX = (W - 8 + CODE_GAP) // (GLYPH + CODE_GAP)    # characters that fit even at scale 1

# Progress bar: the inner track (screen coordinates) that fills from the left.
BAR_STRIP_Y = 86
BAR_X = 16
BAR_Y = BAR_STRIP_Y + 6
BAR_W = W - 2 * BAR_X
BAR_H = 28


def _region(y, h, ops, bg=BG):
    return (0, y, W, h, bg, ops)


def _lines(ops, lines, x, y, w, color, scale, center):
    for ln in lines:
        lx = x + (w - len(ln) * GLYPH * scale) // 2 if center else x
        ops.append(("t", lx, y, ln, color, scale))
        y += LINE * scale


def _box(ops, s, x, y, w, h, color, scales=(2, 1), center=False):
    """Text fitted into the box: the largest scale that shows it all, else cut with '...'."""
    scale, lines = fit(s, w, h, scales)
    _lines(ops, lines, x, y, w, color, scale, center)


def _header(title, color):
    return _region(0, HEAD_H, [("t", M, 10, trunc(clean(title), (W - 2 * M) // 16), FG, 2)], color)


def _footer(s):
    s = trunc(clean(s), (W - 2 * M) // GLYPH)
    return _region(FOOT_Y, FOOT_H, [("t", M, 8, s, DIM, 1)] if s else [])


def _labelled(y, h, label, value, scales=(2, 1)):
    ops = [("t", M, 8, label, DIM, 1)]
    _box(ops, value, M, 24, W - 2 * M, h - 30, FG, scales)
    return _region(y, h, ops)


def code_cells(n):
    """Digit boxes for an n-character code, screen coordinates:
    [(box_x, box_y, box_w, box_h, glyph_x, glyph_y, scale)]. Scale 6 for six digits."""
    s = 6
    while s > 1 and n * GLYPH * s + (n - 1) * CODE_GAP > W - 8:
        s -= 1
    cw = GLYPH * s
    ch = GLYPH * s + 8
    x = (W - (n * cw + (n - 1) * CODE_GAP)) // 2
    y = CODE_Y + (CODE_H - ch) // 2
    cells = []
    for _ in range(n):
        # The font's digits use columns 0-6 and rows 0-6 of the 8x8 cell: centre that ink.
        cells.append((x, y, cw, ch, x + s // 2, y + (ch - 7 * s) // 2, s))
        x += cw + CODE_GAP
    return cells


def bar_fill(percent):
    """Filled width of the bar for a percentage (clamped to 0..100)."""
    return BAR_W * percent_int(percent) // 100


def percent_int(percent):
    try:
        p = int(percent)
    except (TypeError, ValueError):
        p = 0
    return 0 if p < 0 else 100 if p > 100 else p


def booting(f):
    return [
        _header("STARTING", BLUE),
        _labelled(HEAD_H, 90, "Wi-Fi", f.get("wifi") or "-"),
        _labelled(HEAD_H + 90, 90, "Server", f.get("server") or "-"),
        _footer(f.get("version") or ""),
    ]


def activation(f):
    code = clean(f.get("code")).strip()[:CODE_MAX]
    cells = code_cells(len(code))
    ops = []
    for i in range(len(cells)):
        bx, by, bw, bh, gx, gy, s = cells[i]
        ops.append(("r", bx, by - CODE_Y, bw, bh, CELL))
        ops.append(("t", gx, gy - CODE_Y, code[i], FG, s))
    msg = []
    _box(msg, f.get("message") or "", M, 6, W - 2 * M, 80, FG, (2, 1), True)
    return [
        _header("ACTIVATION", AMBER),
        _region(HEAD_H, CODE_Y - HEAD_H, [("t", (W - 15 * GLYPH) // 2, 12, "Activation code", DIM, 1)]),
        _region(CODE_Y, CODE_H, ops),
        _region(CODE_Y + CODE_H, FOOT_Y - CODE_Y - CODE_H, msg),
        _footer(f.get("url") or "Waiting for activation..."),
    ]


def checking(f):
    top = []
    _box(top, "Checking for updates...", M, 30, W - 2 * M, 36, FG, (2, 1), True)
    low = []
    _box(low, f.get("server") or "", M, 10, W - 2 * M, 70, DIM, (1,), True)
    return [
        _header("CHECKING", BLUE),
        _region(HEAD_H, 90, top),
        _region(HEAD_H + 90, 90, low),
        _footer(f.get("version") or ""),
    ]


def updating(f):
    vers = []
    _box(vers, "%s -> %s" % (f.get("from_v") or "?", f.get("to_v") or "?"),
         M, 8, W - 2 * M, 36, FG, (2, 1), True)
    by = BAR_Y - BAR_STRIP_Y
    bar = [("o", BAR_X - 2, by - 2, BAR_W + 4, BAR_H + 4, DIM), ("r", BAR_X, by, BAR_W, BAR_H, TRACK)]
    fw = bar_fill(f.get("percent"))
    if fw:
        bar.append(("r", BAR_X, by, fw, BAR_H, FILL))
    pct = "%d%%" % percent_int(f.get("percent"))
    stats = [("t", (W - len(pct) * 32) // 2, 10, pct, FG, 4)]
    rate = f.get("rate_kib_s")
    if rate is not None:
        r = ("%d KiB/s" % int(rate)) if rate >= 1000 else ("%.1f KiB/s" % rate)
        r = trunc(r, (W - 2 * M) // 16)
        stats.append(("t", (W - len(r) * 16) // 2, 54, r, DIM, 2))
    return [
        _header("UPDATING", BLUE),
        _region(HEAD_H, BAR_STRIP_Y - HEAD_H, vers),
        _region(BAR_STRIP_Y, 40, bar),
        _region(BAR_STRIP_Y + 40, FOOT_Y - BAR_STRIP_Y - 40, stats),
        _footer("Do not power off"),
    ]


def success(f):
    ops = []
    _box(ops, f.get("text") or "Done", M, 20, W - 2 * M, 140, FG, (3, 2, 1), True)
    return [_header("SUCCESS", GREEN), _region(HEAD_H, FOOT_Y - HEAD_H, ops), _footer(f.get("detail") or "")]


def failure(f):
    return [
        _header("FAILED", RED),
        _labelled(HEAD_H, 100, "Reason", f.get("reason") or "unknown error"),
        _labelled(HEAD_H + 100, 80, "Next", f.get("next_action") or "-"),
        _footer(""),
    ]


def idle(f):
    top = [("t", (W - 15 * GLYPH) // 2, 16, "Running version", DIM, 1)]
    _box(top, f.get("version") or "?", M, 34, W - 2 * M, 64, FG, (4, 3, 2, 1), True)
    low = []
    _box(low, f.get("detail") or "", M, 8, W - 2 * M, 54, DIM, (2, 1), True)
    return [_header("READY", BLUE), _region(HEAD_H, 110, top), _region(HEAD_H + 110, 70, low), _footer("")]


LAYOUTS = {
    "booting": booting,
    "activation": activation,
    "checking": checking,
    "updating": updating,
    "success": success,
    "failure": failure,
    "idle": idle,
}


def layout(kind, fields):
    return LAYOUTS[kind](fields)
