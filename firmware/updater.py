# The update engine: stream an app image from a URL into the next OTA partition, verify it twice
# (the bytes received, then what actually landed on flash) and only then switch the boot
# partition. It never reboots; the caller does, and the new image confirms itself after its
# health check (until then the bootloader rolls it back on the next reset).
#
# install() composes the stages of firmware/update/ (docs/ARCHITECTURE.md draws them):
#   source:  HttpSource (Range resume), wrapped by GzipSource (a ".gz" URL, or a response with
#            Content-Encoding: gzip) -- so what follows always sees plain image bytes;
#            or by DeltaSource (offer.delta: the URL is a patch against the running image);
#   checks:  HeaderCheck (magic, chip, esp_app_desc_t, version), Digest md5/sha256,
#            ImageCheck (the image's checksum byte and appended SHA-256);
#   writer:  FlashWriter (lazy 64 KiB / 4 KiB erase, program once, read-back, scrub);
#   signature: SignatureStage (Secure Boot V2, when the policy from config + efuse says so),
#            verified after the read-back, before commit;
#   commit:  image length, set_boot.
# Anti-rollback (esp_app_desc_t.secure_version, anti_rollback.py) is part of HeaderCheck.
# A new capability (a signature check, a delta source) is one more stage here.
#
# The offer's md5/sha256/size describe the file the server stores: for a ".gz" URL that is the
# compressed file (the md5 a platform computes over the upload), checked on the wire bytes; for
# on-the-fly Content-Encoding it is the image itself.
#
# Resume: a dropped connection continues with a Range request where the checks left off; after
# a reset the same offer continues from its resume record (firmware/update/resume.py),
# re-hashing what is on flash; if that result then fails a check the engine starts over once
# from byte 0. A gzip stream cannot continue mid-stream: it restarts from byte 0 but skips
# re-writing what is on flash. After a failure that got as far as the flash, the target's first
# sector is erased.
#
# Memory: one chunk buffer (plus gzip's window and ring when inflating). When the heap has
# room (a board with PSRAM) that buffer is 64 KiB: whole 64 KiB blocks are erased at once, and
# a 64 KiB chunk is its own stage, so it costs no more than 4 KiB chunks gathered in a 64 KiB
# stage and takes a sixteenth of the per-chunk work. Else 4 KiB chunks and sectors
# (flash_writer.py). A caller that names a chunk size gets it, with the stage when it fits.
import binascii
import gc

from firmware import anti_rollback, log
from firmware.update import checks, commit, resume as resume_mod, signature_stage
from firmware.update.errors import (E_DOWNLOAD, E_FLASH, E_INTEGRITY, E_VERSION,  # noqa: F401
                                    UpdateError, short)
from firmware.update.flash_writer import BLOCK, FlashWriter
from firmware.update.http_source import HttpSource
from firmware.update.image_check import ImageCheck
from firmware.update.pace import DEFAULT_RATE, Ticker, min_rate  # noqa: F401 -- for callers
from firmware.update.pipeline import PROGRESS_MS, Pipeline  # noqa: F401

RESUME_KEY = resume_mod.KEY
PERSIST_MS = 1000      # resume records at most once a second (and per 64 KiB)
RETRIES = 5            # consecutive failed attempts (no progress) before giving up
BACKOFF_MS = 500       # first retry delay, doubled per failure up to BACKOFF_MAX_MS
BACKOFF_MAX_MS = 8000
BIG_HEAP = 256 * 1024  # with this much free heap (a board with PSRAM), a 64 KiB stage

_log = log.get("updater")


class Offer:
    """What to install. size/md5/sha256 describe the file the server stores (see above)."""

    def __init__(self, url, size=None, md5=None, sha256=None, version=None, force=False,
                 delta=False, from_sha256=None):
        self.url = url
        self.delta = delta              # the URL is a patch; size/md5 are the patch file's
        self.from_sha256 = from_sha256  # the image it applies to (else its header names it)
        self.size = size
        self.md5 = md5
        self.sha256 = sha256
        self.version = version
        self.force = force


def _hexarg(value, n, what):
    if value is None or value == "":
        return None
    s = str(value).strip().lower()
    if len(s) != n:
        raise UpdateError(E_DOWNLOAD, "bad %s in offer" % what)
    try:
        binascii.unhexlify(s)
    except ValueError:
        raise UpdateError(E_DOWNLOAD, "bad %s in offer" % what)
    return s


def _url_path(url):
    i = url.find("?")
    j = url.find("#")
    if j >= 0 and (i < 0 or j < i):
        i = j
    return url if i < 0 else url[:i]


class _Update:
    """One offer, validated against the target partition; builds the stages for each pass."""

    def __init__(self, board, offer, running_version, tls, timeout_ms, chunk, stage, policy,
                 min_rate=None, tick=None):
        self.board = board
        self.policy = policy
        self.floor = anti_rollback.floor(board)
        self.sig = None
        self.offer = offer
        self.url = offer.url
        if not isinstance(self.url, str) or not self.url:
            raise UpdateError(E_DOWNLOAD, "offer has no URL")
        self.md5 = _hexarg(offer.md5, 32, "md5")
        self.sha256 = _hexarg(offer.sha256, 64, "sha256")
        try:
            self.size = None if offer.size in (None, "") else int(offer.size)
        except (TypeError, ValueError):
            raise UpdateError(E_DOWNLOAD, "bad size in offer")
        if self.size is not None and self.size <= 0:
            raise UpdateError(E_INTEGRITY, "bad size in offer")
        self.running = running_version
        self.tls = tls
        self.timeout_ms = timeout_ms
        self.chunk = chunk
        self.stage = stage
        self.min_rate = min_rate
        self.tick = tick
        self.delta = bool(offer.delta)
        self.from_sha256 = _hexarg(offer.from_sha256, 64, "from_sha256")
        self.gz_url = not self.delta and _url_path(self.url).lower().endswith(".gz")
        P = board.Partition
        try:
            self.part = P(P.RUNNING).get_next_update()
            info = self.part.info()
        except (OSError, ValueError) as e:
            raise UpdateError(E_FLASH, "no OTA partition to write: %s" % e)
        self.label = info[4]
        self.psize = info[3]
        self.buf = None
        self.writers = []      # one per pass; a failed pass may have left flash written
        self.touched = False
        self.desc = None

    def precheck(self):
        o = self.offer
        if o.version is not None and not o.force:
            checks.check_newer(o.version, self.running)
        if self.size is not None and not (self.gz_url or self.delta) and self.size > self.psize:
            raise UpdateError(E_INTEGRITY, "image (%d bytes) larger than partition %s (%d bytes)"
                              % (self.size, self.label, self.psize))

    def resume_store(self):
        return resume_mod.Resume(self.board.settings, self.url, self.offer.version, self.md5,
                                 self.size, self.label, self.psize, PERSIST_MS)

    def pipeline(self, written, store, progress, probe):
        """Fresh stages for one pass; `written`: bytes on flash from before a reset."""
        if self.buf is None:
            self.buf = bytearray(self.chunk)
        gz = self.gz_url
        wire = gz or self.delta  # the offer's md5/size are of the stored file, not the image
        # The stored file's digests: on the wire bytes for a .gz file, else on the image.
        md5 = checks.Digest("md5", None if wire else self.md5)  # also what the read-back matches
        image = [md5]
        taps = []
        if self.sha256:
            (taps if gz else image).append(checks.Digest("sha256", self.sha256))
        if wire and self.md5:
            taps.insert(0, checks.Digest("md5", self.md5))
        src = HttpSource(self.url, self.size, self.tls, self.timeout_ms, taps, self.min_rate)
        if self.delta:  # no resume record: a patch restarts from byte 0 (delta_source.py)
            from firmware.update.delta_source import DeltaSource
            P = self.board.Partition
            src = DeltaSource(src, P(P.RUNNING), self.psize, self.from_sha256, self.chunk,
                              self.size)
            store = None
        else:
            from firmware.update.gzip_source import GzipSource  # deflate only when imported (RAM)
            src = GzipSource(src, self.chunk, gz, self.size if gz else None, self.psize)
        self.header = checks.HeaderCheck(self.offer.version, self.running, self.offer.force,
                                         self.floor)
        if self.writers:
            last = self.writers[-1]
            self.touched = self.touched or bool(last.erased or last.pos)
        writer = FlashWriter(self.part, self.stage)
        writer.resume(written)
        self.writers.append(writer)
        self.sig = signature_stage.stage(self.policy, writer, self.buf)
        # The image's own checksum and SHA-256, after the offer's digests. With a signature
        # stage it is judged after the signature (a signed image's fault is the signature's to
        # name), and a required signature stands in for its SHA-256 (image_check.py).
        sig = self.sig
        own = ImageCheck(digest=not (sig and self.policy.required), defer=sig is not None)
        image.append(own)
        if sig is not None:
            sig.then = own
            image.append(sig)
        return Pipeline(src, self.header, image, writer, self.buf, (self.label, self.psize),
                        md5, taps, None if wire else self.size, store, progress, probe,
                        self.tick)

    def commit(self, end):
        if self.sig is not None:
            self.sig.verify()
        commit.commit(self.part, end)

    def scrub(self):
        """The first sector goes when any pass touched the target (a resumed pass counts)."""
        w = self.writers
        if w and (self.touched or w[-1].erased or w[-1].pos):
            w[-1].scrub_now()


def _stage(chunk, want):
    """The 64 KiB block stage: wanted (True/False), or None: when BIG_HEAP is free."""
    if chunk >= BLOCK or want is False:
        return None
    if want is None:
        gc.collect()
        if gc.mem_free() < BIG_HEAP:
            return None
    try:
        return bytearray(BLOCK)
    except MemoryError:
        return None


def _chunk(stage):
    """The chunk size install() picks by itself: 64 KiB when BIG_HEAP is free (and stages are
    not refused), else 4 KiB. Resume records fall on 64 KiB boundaries, so they fit either."""
    if stage is False:
        return 4096
    gc.collect()
    return BLOCK if gc.mem_free() >= BIG_HEAP else 4096


def install(board, offer, running_version, progress=None, tls=None, timeout_ms=15000, chunk=None,
            retries=RETRIES, probe=None, stage=None, min_rate=DEFAULT_RATE, tick=None, config=None):
    """Download `offer` into the next OTA partition and set it to boot; return its label.

    progress(done, total, rate_bytes_s) is called at most every PROGRESS_MS (total may be None).
    probe(offset), for benchmarks, is called after every chunk. chunk: the buffer size, a power
    of two in 1024..65536, or None: 64 KiB when the heap has room, else 4 KiB (_chunk). stage:
    gather chunks into 64 KiB blocks (block erases) -- True, False, or None: when the heap has
    BIG_HEAP free. min_rate: (bytes_per_s, window_ms) a body must
    keep (update/pace.py; None: no floor). tick(): run every pace.HOOK_MS of a download while
    bytes flow, whatever the chunk fill (the MQTT session's service). config: the app config,
    whose `update` section and the board's efuse key digests make the signature policy (None:
    efuse keys only). Raises UpdateError (.code, .reason); the boot partition is untouched
    then. Never reboots."""
    if chunk is None:
        chunk = _chunk(stage)
    if chunk < 1024 or chunk > BLOCK or chunk & (chunk - 1):
        raise UpdateError(E_DOWNLOAD, "chunk must be a power of two in 1024..65536")
    pol = signature_stage.policy(board, config)
    signature_stage.announce(pol)
    up = _Update(board, offer, running_version, tls, timeout_ms, chunk, _stage(chunk, stage), pol,
                 min_rate, Ticker(tick))
    up.precheck()
    store = up.resume_store()
    written = 0 if up.delta else store.load(chunk)
    _log.info("update %s -> %s into %s", running_version, offer.version or "?", up.label)
    try:
        try:
            pipe = up.pipeline(written, store, progress, probe)
            end = pipe.run(retries, BACKOFF_MS, BACKOFF_MAX_MS)
            up.commit(end)
        except UpdateError as e:
            # A resumed download trusted flash written before a reset; if the result does not
            # verify, do it once more from scratch before giving up.
            if not written or e.code == E_DOWNLOAD:
                raise
            _log.warning("resumed image failed (%s); downloading again from the start", e.reason)
            pipe = up.pipeline(0, store, progress, probe)
            end = pipe.run(retries, BACKOFF_MS, BACKOFF_MAX_MS)
            up.commit(end)
    except UpdateError as e:
        up.scrub()
        store.forget()
        _log.error("update failed: %s", e)
        raise
    except Exception as e:
        up.scrub()
        store.forget()
        _log.error("update failed: %r", e)
        raise UpdateError(E_DOWNLOAD, "internal error: %s" % short(repr(e)))
    store.forget()
    if progress is not None:
        pipe.report(end, end)
    _log.info("image %s written to %s and set to boot", up.header.desc.version, up.label)
    return up.label
