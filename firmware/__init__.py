# OTA provisioning and update firmware for ESP32-S3 boards (ESP-BOX-3), in MicroPython.
