"""Quantities as people read them: byte sizes for summaries and command output."""

from __future__ import annotations

__all__ = ["human_size"]


def human_size(n: int) -> str:
    """Bytes as B, KB, MB, GB or TB (powers of 1024)."""
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"
