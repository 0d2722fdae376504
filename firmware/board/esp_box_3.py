# ESP-BOX-3 hardware facts, in one place (source: Espressif's ESP-BSP definition for esp-box-3).
# Constants only: drivers and the simulator import this; nothing here touches `machine`.

NAME = "esp-box-3"

# LCD: 2.4" 320x240, ILI9342C-class controller, 16-bit RGB565, BGR element order.
LCD_WIDTH = 320
LCD_HEIGHT = 240
LCD_SPI_HOST = 3          # the ESP-IDF host: SPI3_HOST
LCD_SPI_ID = 2            # MicroPython's machine.SPI id for SPI3_HOST on the ESP32-S3 (1 = SPI2)
LCD_SPI_HZ = 40000000
LCD_SPI_MODE = 0          # CPOL 0, CPHA 0
LCD_MOSI = 6
LCD_SCLK = 7
LCD_CS = 5
LCD_DC = 4                # low: command byte, high: parameters / pixels
LCD_RST = 48              # shared with the touch controller's reset
LCD_RST_ACTIVE = 1        # reset is active-HIGH on this board
LCD_BACKLIGHT = 47
LCD_BACKLIGHT_ON = 1      # active-high
LCD_MIRROR_X = True       # the glass is mounted so both axes are mirrored
LCD_MIRROR_Y = True
# BGR element order: esp-bsp bsp/esp-box-3/include/bsp/display.h:35 BSP_LCD_COLOR_SPACE is
# LCD_RGB_ELEMENT_ORDER_BGR; esp_lcd_ili9341.c:95-96 turns it into MADCTL bit 3, which with
# esp_lcd_panel_mirror(panel, true, true) (esp-box-3.c:613) makes MADCTL 0xC8.
LCD_BGR = True

# Panel tuning written after the controller's extended command set is unlocked (0xC8):
# (command, parameters). Power control 1/2, VCOM, inversion control, gamma, frame rate, entry mode.
LCD_PANEL_TUNING = (
    (0xC0, b"\x0e\x0e"),
    (0xC5, b"\xd0"),
    (0xC1, b"\x02"),
    (0xB4, b"\x02"),
    (0xE0, b"\x00\x03\x08\x06\x13\x09\x39\x39\x48\x02\x0a\x08\x17\x17\x0f"),
    (0xE1, b"\x00\x28\x29\x01\x0d\x03\x3f\x33\x52\x04\x0f\x0e\x37\x38\x0f"),
    (0xB1, b"\x00\x1b"),
    (0xB7, b"\x06"),
)

# Audio: ES8311 codec on I2C, speaker power amplifier enable.
I2C_SDA = 8
I2C_SCL = 18
PA_ENABLE = 46

# BOOT button (active-low, the strapping pin).
BOOT_BUTTON = 0
