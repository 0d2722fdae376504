# The delta applier's hot loops as machine code (the viper emitter). Importing this module
# fails (SyntaxError, or ValueError for a .mpy of another arch) on a port without the emitter;
# firmware/delta_ops.py then falls back to its plain-Python twins, which define the contract.
#
# Every kernel takes at most four arguments (older ports' viper limit) and gets its positions
# in `st`, an array('i'), so a call allocates nothing.
import micropython


@micropython.viper
def add(dst: ptr8, a: ptr8, b: ptr8, st: ptr32):
    d = st[0]
    i = st[1]
    j = st[2]
    end = d + st[3]
    while d < end:
        dst[d] = a[i] + b[j]  # a ptr8 store keeps the low byte: the sum mod 256
        d += 1
        i += 1
        j += 1


@micropython.viper
def copy(dst: ptr8, a: ptr8, st: ptr32):
    d = st[0]
    i = st[1]
    end = d + st[3]
    while d < end:
        dst[d] = a[i]
        d += 1
        i += 1


@micropython.viper
def fill(dst: ptr8, st: ptr32):
    d = st[0]
    v = st[1]
    end = d + st[3]
    while d < end:
        dst[d] = v
        d += 1


@micropython.viper
def heatshrink(st: ptr32, inp: ptr8, out: ptr8, win: ptr8):
    # State layout and phases: see delta_ops.heatshrink.
    ip = st[0]
    iend = st[1]
    op = st[2]
    oend = st[3]
    acc = st[4]
    nb = st[5]
    ph = st[6]
    head = st[7]
    back = st[8]
    cnt = st[9]
    wbits = st[10]
    lbits = st[11]
    mask = (1 << wbits) - 1
    run = 1
    while run:
        if ph == 4:
            while cnt > 0 and op < oend:
                c = win[(head - back) & mask]
                out[op] = c
                win[head] = c
                head = (head + 1) & mask
                op += 1
                cnt -= 1
            if cnt > 0:
                break
            ph = 0
        if ph == 1 and op >= oend:
            break
        need = 1
        if ph == 1:
            need = 8
        elif ph == 2:
            need = wbits
        elif ph == 3:
            need = lbits
        while nb < need:
            if ip >= iend:
                run = 0
                break
            acc = (acc << 8) | inp[ip]
            ip += 1
            nb += 8
        if not run:
            break
        nb -= need
        v = (acc >> nb) & ((1 << need) - 1)
        acc &= (1 << nb) - 1
        if ph == 0:
            ph = 2
            if v:
                ph = 1
        elif ph == 1:
            out[op] = v
            win[head] = v
            head = (head + 1) & mask
            op += 1
            ph = 0
        elif ph == 2:
            back = v + 1
            ph = 3
        else:
            cnt = v + 1
            ph = 4
    st[0] = ip
    st[2] = op
    st[4] = acc
    st[5] = nb
    st[6] = ph
    st[7] = head
    st[8] = back
    st[9] = cnt
