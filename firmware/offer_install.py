# Installing a firmware offer from the OTA check (ota_check's Result.offer): the refused-offer
# backoff first (a bad image is not downloaded and written again at every check), then the
# saved offer that lets a reset resume it, then the update engine (delta_offer picks delta or
# full), with progress on screen. Reboots on success; returns False on any failure, which is
# logged, shown, and remembered so the same offer backs off.
from firmware import delta_offer, install_record, log, refused_offers, saved_offer, watchdog

_log = log.get("app")


def install(board, display, config, offer, running_version, tls):
    """Download and install `offer` (a dict); reboots on success, returns False on failure."""
    to_v = offer.get("version") or "?"
    keeping = "keeping %s" % running_version
    oid = refused_offers.offer_id(offer.get("url"), offer.get("version"), offer.get("size"),
                                  offer.get("md5"), offer.get("sha256"))
    no = refused_offers.blocked(board, oid, offer.get("force"))
    if no:  # the same image failed before: not downloaded and written again yet
        _log.info("%s", no[0])
        display.show_failure(no[0], keeping)
        return False
    try:
        from firmware import updater
    except ImportError:
        _log.warning("update %s offered but this build has no update engine", to_v)
        return False
    except MemoryError:  # the engine does not fit the heap left: keep running, say why
        _log.error("update to %s failed: out of memory loading the update engine", to_v)
        display.show_failure("update failed: out of memory", keeping)
        return False
    _log.info("installing %s from %s", to_v, offer.get("url", "?").split("?")[0])
    settings = board.settings
    why = saved_offer.begin(settings, "check", offer.get("version"), offer.get("url"),
                            offer.get("md5"), offer.get("size"))
    if why:  # a reset loop: the same offer cut short by resets again and again
        _log.error("update to %s not started: %s", to_v, why)
        display.show_failure("update failed: %s" % why, keeping)
        return False
    display.show_updating(0, None, running_version, to_v)
    try:
        label = delta_offer.install(updater, board, offer, running_version,
                                    progress=Progress(display, running_version, to_v), tls=tls,
                                    min_rate=updater.min_rate(config), config=config)
    except updater.UpdateError as e:
        saved_offer.forget(settings)
        _log.error("update to %s failed: %s", to_v, e.reason)
        refused_offers.refused(board, oid, to_v, e.code, e.reason)
        display.show_failure("update failed: %s" % e.reason, keeping)
        return False
    saved_offer.forget(settings)
    install_record.note_installed(board, offer)
    refused_offers.forget(board)
    _log.info("firmware %s installed in %s; rebooting into it", to_v, label)
    display.show_success("Updated to %s, restarting" % to_v)
    board.reboot()
    return True


class Progress:
    """updater's progress(done, total, rate_bytes_s) -> the display (total may be None)."""

    def __init__(self, display, from_v, to_v):
        self.display = display
        self.from_v = from_v
        self.to_v = to_v

    def __call__(self, done, total=None, rate=None):
        watchdog.feed()  # bytes arrived: the download is alive
        pct = done * 100 // total if total else 0
        kib_s = rate / 1024 if rate else None
        self.display.show_updating(pct, kib_s, self.from_v, self.to_v)
