# ESP-BOX-3 (ESP32-S3, 16 MiB quad flash, 16 MiB octal PSRAM, native USB) with the OTA layout
# of ../partitions-esp-box-3-ota.csv. Built out of tree: make BOARD_DIR=<this folder>.
set(IDF_TARGET esp32s3)

# ESP-IDF reads the partition CSV path and the app version from the sdkconfig, which cannot
# name paths relative to this folder; write that fragment into the build directory instead.
get_filename_component(ESP_BOX_3_PARTITION_CSV
    ${MICROPY_BOARD_DIR}/../partitions-esp-box-3-ota.csv ABSOLUTE)
if(NOT ESP_BOX_3_APP_VERSION)
    set(ESP_BOX_3_APP_VERSION "$ENV{ESP_BOX_3_APP_VERSION}")
endif()
if(NOT ESP_BOX_3_APP_VERSION)
    message(WARNING "ESP_BOX_3_APP_VERSION not set: the image's esp_app_desc says 0.0.0, "
                    "so every firmware a server offers will look newer")
    set(ESP_BOX_3_APP_VERSION "0.0.0")
endif()
file(WRITE ${CMAKE_BINARY_DIR}/sdkconfig.esp_box_3_ota
    "CONFIG_PARTITION_TABLE_CUSTOM_FILENAME=\"${ESP_BOX_3_PARTITION_CSV}\"\n"
    "CONFIG_APP_PROJECT_VER=\"${ESP_BOX_3_APP_VERSION}\"\n")

# boards/sdkconfig.usb (TinyUSB) exists up to v1.26 and was deleted before v1.27.0 (commit
# "esp32: Remove dependency on esp_tinyusb"); the port's CMakeLists.txt file(READ)s every
# defaults file and fails on a missing one, so use it only where the release has it.
set(ESP_BOX_3_SDKCONFIG_USB)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/boards/sdkconfig.usb)
    set(ESP_BOX_3_SDKCONFIG_USB boards/sdkconfig.usb)
endif()

set(SDKCONFIG_DEFAULTS
    boards/sdkconfig.base
    ${SDKCONFIG_IDF_VERSION_SPECIFIC}
    ${ESP_BOX_3_SDKCONFIG_USB}
    boards/sdkconfig.ble
    boards/sdkconfig.240mhz
    boards/sdkconfig.spiram_sx
    boards/sdkconfig.spiram_oct
    ${MICROPY_BOARD_DIR}/sdkconfig.board
    ${CMAKE_BINARY_DIR}/sdkconfig.esp_box_3_ota
)

set(MICROPY_FROZEN_MANIFEST ${MICROPY_BOARD_DIR}/manifest.py)
