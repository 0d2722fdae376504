// ESP-BOX-3: ESP32-S3 with 16 MiB flash and 16 MiB octal PSRAM; OTA partition layout.
#define MICROPY_HW_BOARD_NAME               "ESP-BOX-3 OTA"
#define MICROPY_HW_MCU_NAME                 "ESP32-S3"

// The USB-C port goes straight to the S3's USB pins (REPL via sdkconfig.usb); there is no
// USB-UART bridge, so no REPL on UART0.
#define MICROPY_HW_ENABLE_UART_REPL         (0)

// Default I2C bus: the one the ES8311 codec sits on.
#define MICROPY_HW_I2C0_SCL                 (18)
#define MICROPY_HW_I2C0_SDA                 (8)
