"""Storage failures while reading one file become error rows with the right kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.memory import MemoryFileSystem

from dupflow.encode.encoding import encode_refs
from dupflow.encode.settings import EncodeSettings
from dupflow.io.listing import ImageRef
from imagegen import encode, natural, write


class DeniedFileSystem(MemoryFileSystem):  # type: ignore[misc]  # fsspec ships no types
    """Permission errors cannot be produced for root on a local disk; this store refuses reads."""

    protocol = "denied"

    def cat_file(self, path: str, start: Any = None, end: Any = None, **kwargs: Any) -> bytes:  # noqa: ARG002 - fsspec's signature
        raise PermissionError(13, "Permission denied", path)


def _ref(uri: str, size: int = 10) -> ImageRef:
    return ImageRef(uri=uri, dataset="d", rel_path=uri.rsplit("/", 1)[-1], size=size, mtime_ns=1_000, etag=None)


def test_file_deleted_after_listing_is_vanished(tmp_path: Path) -> None:
    gone = write(tmp_path / "gone.jpg", natural(1, 64, 64))
    kept = write(tmp_path / "kept.jpg", natural(2, 64, 64))
    refs = [_ref(str(gone)), _ref(str(kept))]
    gone.unlink()
    table, stats = encode_refs(refs, EncodeSettings())
    rows = {Path(r["uri"]).name: r for r in table.to_pylist()}
    assert rows["gone.jpg"]["error"] == "vanished"
    assert rows["kept.jpg"]["error"] is None
    assert stats.errors == {"vanished": 1}
    assert stats.encoded == 1


def test_permission_denied_is_unreadable() -> None:
    fsspec.register_implementation("denied", DeniedFileSystem, clobber=True)
    table, _ = encode_refs([_ref("denied://bucket/a.jpg")], EncodeSettings())
    (row,) = table.to_pylist()
    assert row["error"] == "unreadable"
    assert "Permission denied" in row["error_message"]


def test_file_above_byte_limit_is_too_large_but_still_digested(tmp_path: Path) -> None:
    data = encode(natural(3, 200, 150), "PNG")
    path = tmp_path / "big.png"
    path.write_bytes(data)
    table, _ = encode_refs([_ref(str(path), size=len(data))], EncodeSettings(max_file_bytes=100))
    (row,) = table.to_pylist()
    import hashlib

    assert row["error"] == "too_large"
    assert row["exact"] == hashlib.sha256(data).digest()
