# Signature stage: the Secure Boot V2 signature of an image (firmware/secure_boot.py), checked
# before the boot partition changes.
#
# It is fed the image stream like the other checks (SignatureCheck.update hashes the signed part
# in the same pass); its pipeline finish() does nothing. verify() runs after the pipeline's
# read-back, right before commit: the signature sector is then read from flash -- where the
# bootloader will read it -- into the pipeline's chunk buffer, which is free by then, so the
# check holds no 4 KiB buffer of its own (heap: a hash object, and rsa_pss's big integers for
# the one verify). A refusal is E_INTEGRITY with the reason ("unsigned", "unknown key", "bad
# signature", "hash mismatch", ...); the updater then scrubs the target's first sector.
#
# The policy -- which key digests are trusted, whether a signature is required -- comes from
# config["update"] plus the efuse SECURE_BOOT_DIGESTn the board reads (secure_boot.policy).
from firmware import log
from firmware.update.errors import E_INTEGRITY, UpdateError

SECTOR = 4096

_log = log.get("updater")
_announced = [False]  # the policy is described once per boot (per process)


class _Off:
    """No key anywhere and signatures not asked for: nothing is checked (secure_boot.Policy's
    face, without importing secure_boot and rsa_pss -- their bytecode is heap on a board)."""
    trusted = ()
    required = False
    errors = ()

    def check(self):
        return None


UNAUTHENTICATED = "updates are unauthenticated: no trusted signing key is configured"


def policy(board, config):
    """The signature policy of `board` with the app config `config` (a dict, or None: efuse
    keys only). An efuse that cannot be read fails closed: signatures required, no key known."""
    cfg = config.get("update") if isinstance(config, dict) else None
    try:
        efuse = board.secure_boot_digests()
    except (OSError, ValueError) as e:
        efuse = None
        err = "cannot read the efuse key digests: %s" % e
    if efuse == [] and (not isinstance(cfg, dict) or (cfg.get("trusted_keys") in (None, [])
                                                      and cfg.get("require_signature") in (None, False))):
        return _Off()
    from firmware import secure_boot
    if efuse is None:
        return secure_boot.Policy([], True, 0, [err])
    return secure_boot.policy(cfg, efuse)


def announce(pol):
    """Log the policy once per boot: a warning when updates are unauthenticated."""
    if _announced[0]:
        return
    _announced[0] = True
    for err in pol.errors:
        _log.error("signature policy: %s", err)
    if not pol.trusted and not pol.required:
        _log.warning("%s", UNAUTHENTICATED)
    else:
        _log.info("signature policy: %s", pol.describe())


class SignatureStage:
    def __init__(self, check, writer, buf):
        self.check = check
        self.update = check.update  # no wrapper call per chunk
        self.writer = writer
        self.buf = buf if len(buf) >= SECTOR else None  # else secure_boot allocates 4 KiB
        self.then = None  # a deferred check judged after the signature (updater: ImageCheck)

    def finish(self, end):
        pass  # see verify()

    def verify(self):
        """After the read-back: the signature sector on flash must verify; UpdateError else."""
        from firmware.secure_boot import SignatureError
        chk = self.check
        try:
            ok = chk.finish(self.writer.read, self.buf)
        except SignatureError as e:
            _log.error("image refused: %s", e)
            raise UpdateError(E_INTEGRITY, e.reason)
        if ok:
            _log.info("signature verified (block %d, key %s)", chk.block, chk.key)
        else:
            _log.warning("unsigned image accepted: signatures are not required")
        if self.then is not None:
            self.then.verdict()


def stage(pol, writer, buf):
    """A SignatureStage for one pass, or None when the policy checks nothing."""
    chk = pol.check()
    return None if chk is None else SignatureStage(chk, writer, buf)
