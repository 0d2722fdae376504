# The update engine's stages (firmware/updater.py composes them):
#   source (http_source, gzip_source) -> checks -> flash_writer -> commit
# plus resume (progress persisted across resets) and pipeline (the chunk loop, retries).
