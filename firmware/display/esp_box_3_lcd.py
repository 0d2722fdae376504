# The real ESP-BOX-3 LCD: machine.SPI/Pin wiring for the ILI9342 driver (imports machine lazily,
# so only the ESP32-S3 board loads it).
from firmware.board import esp_box_3 as hw
from firmware.display.ili9342 import ILI9342


def make_lcd(spi_id=hw.LCD_SPI_ID, baudrate=hw.LCD_SPI_HZ, init=True):
    """SPI3 (machine.SPI id 2 on the ESP32-S3) at 40 MHz, mode 0, write-only bus."""
    import machine
    Pin = machine.Pin
    # miso=None: left out, the esp32 port claims its default MISO for SPI(2), GPIO37 -- a pin
    # the ESP-BOX-3's octal PSRAM uses.
    spi = machine.SPI(spi_id, baudrate=baudrate, polarity=0, phase=0,
                      sck=Pin(hw.LCD_SCLK), mosi=Pin(hw.LCD_MOSI), miso=None)
    lcd = ILI9342(
        spi,
        dc=Pin(hw.LCD_DC, Pin.OUT, value=0),
        cs=Pin(hw.LCD_CS, Pin.OUT, value=1),
        rst=Pin(hw.LCD_RST, Pin.OUT, value=1 - hw.LCD_RST_ACTIVE),
        bl=Pin(hw.LCD_BACKLIGHT, Pin.OUT, value=1 - hw.LCD_BACKLIGHT_ON),
        width=hw.LCD_WIDTH, height=hw.LCD_HEIGHT,
        mirror_x=hw.LCD_MIRROR_X, mirror_y=hw.LCD_MIRROR_Y, bgr=hw.LCD_BGR,
        rst_active=hw.LCD_RST_ACTIVE, bl_active=hw.LCD_BACKLIGHT_ON,
        tuning=hw.LCD_PANEL_TUNING)
    if init:
        lcd.init()
    return lcd
