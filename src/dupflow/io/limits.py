"""The decode's default limits, without the decoder's imports (Pillow, numpy): the settings read them."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_FILE_BYTES", "DEFAULT_MAX_PIXELS"]

# Pillow's own default guard is 89.5 M pixels; photographs above 250 MP are rare, bombs are not.
DEFAULT_MAX_PIXELS = 250_000_000
DEFAULT_MAX_FILE_BYTES = 1 << 30
