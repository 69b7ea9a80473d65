"""Facts every layer may use: the one error type, the device and what it runs fast, heap memory."""
