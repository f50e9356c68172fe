"""Small thumbnails for the report, embedded as base64 WebP or JPEG: made on threads, one file at a time."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dupflow.errors import FileFailure
from dupflow.io.decoding import decode_image
from dupflow.io.fs import file_error_kind, open_fs

__all__ = ["Thumbnail", "make_thumbnails"]

_MIME = {"webp": "image/webp", "jpeg": "image/jpeg"}


@dataclass(frozen=True)
class Thumbnail:
    """A data URI, or why there is none (the file changed, vanished or no longer decodes)."""

    data_uri: str | None
    failure: str | None = None


def make_thumbnails(uris: Sequence[str], *, size: int, fmt: str, quality: int, max_pixels: int,
                    threads: int, storage_options: dict[str, Any] | None = None) -> list[Thumbnail]:
    """One thumbnail per URI (at most `size` px on the long side), in order; failures are recorded, never raised."""
    if fmt not in _MIME:
        raise ValueError(f"thumbnail format {fmt!r}: use webp or jpeg")

    def one(uri: str) -> Thumbnail:
        try:
            fs, path = open_fs(uri, storage_options)  # per file: one store may hold local and S3 datasets
            data = fs.cat_file(path)
        except Exception as exc:  # noqa: BLE001 - per file: classified in one table
            return Thumbnail(None, f"{file_error_kind(exc).value}: {exc}")
        try:
            picture = decode_image(data, mode="RGB", decode_size=size, max_pixels=max_pixels).image
        except FileFailure as failure:
            return Thumbnail(None, f"{failure.kind.value}: {failure.message}")
        picture.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        if fmt == "webp":
            picture.save(buf, "WEBP", quality=quality, method=4)
        else:
            picture.save(buf, "JPEG", quality=quality, optimize=True)
        return Thumbnail(f"data:{_MIME[fmt]};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}")

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(one, uris))
