# What the device says about itself once per boot, before it talks to anyone: the running image
# and its otadata state, a build without app rollback, an image that rolled back (reported -3 by
# install_record), and which images the updater will accept.
from firmware import install_record, log

_log = log.get("app")


def review(board, config, running_version):
    running = board.Partition(board.Partition.RUNNING).info()[4]
    state = board.ota_state()
    _log.info("boot: %s %s, firmware %s in %s (%s)", board.type, board.name, running_version,
              running, state)
    if state in ("undefined", "new"):
        # Without CONFIG_BOOTLOADER_APP_ROLLBACK_ENABLE set_boot writes UNDEFINED and the
        # bootloader never turns NEW into pending-verify (esp_ota_ops.c lines 127-135,
        # bootloader_utility.c lines 444-450); confirming still marks the image valid.
        _log.warning("this build has no app rollback (otadata state %s): a new image that "
                     "fails its health check is not rolled back", state)
    why = install_record.review_rollback(board, running_version)
    if why:
        _log.warning("%s (-3); running %s", why, running_version)
    _announce_signatures(board, config)


def _announce_signatures(board, config):
    # Once per boot: "updates are unauthenticated" when no signing key is known and
    # signatures are off, else which keys the updater trusts.
    try:
        from firmware.update import signature_stage
    except ImportError:  # a build without the update engine
        return
    signature_stage.announce(signature_stage.policy(board, config))
