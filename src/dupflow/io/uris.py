"""Where files may go: destinations confined to the duplicates root, sources to their dataset, URIs
without secrets, and the names sidecars and renamed conflicts get."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "escapes",
    "local_escapes",
    "parent",
    "redact",
    "relative_to",
    "sidecar_name",
    "split_name",
    "suffixed",
]

_BAD_SEGMENTS = frozenset({"", ".", ".."})


def redact(uri: str) -> str:
    """A URI safe to log or journal: no user:password@ and no query string (presigned signatures)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def relative_to(root: str, uri: str) -> str | None:
    """The path of `uri` below `root` when it lies strictly inside it, lexically; else None.

    `..`, `.`, empty segments and NUL bytes never count as inside, whatever they would resolve to.
    """
    base = root.rstrip("/") + "/"
    if not uri.startswith(base) or "\x00" in uri:
        return None
    rel = uri[len(base):]
    if any(seg in _BAD_SEGMENTS for seg in rel.split("/")):
        return None
    return rel


def escapes(root: str, uri: str) -> bool:
    """Whether `uri` is not a path strictly inside `root` (other scheme, bucket, prefix, or `..`)."""
    return relative_to(root, uri) is None


def local_escapes(root: str, path: str) -> bool:
    """Local paths: whether symbolic links in the existing part of `path` lead outside `root`."""
    probe = path
    while not os.path.lexists(probe) and probe not in ("", "/"):
        probe = os.path.dirname(probe)
    if not (probe + "/").startswith(root.rstrip("/") + "/"):
        return False  # the root does not exist yet: everything below it will be made fresh
    real_root = os.path.realpath(root)
    real = os.path.realpath(probe)
    return real != real_root and not real.startswith(real_root.rstrip("/") + "/")


def parent(uri: str) -> str:
    """The folder holding `uri`."""
    return uri.rsplit("/", 1)[0]


def split_name(uri: str) -> tuple[str, str, str]:
    """(folder, stem, extension) of a file URI; the extension keeps its dot."""
    folder, name = uri.rsplit("/", 1)
    stem, ext = os.path.splitext(name)
    return folder, stem, ext


def sidecar_name(image_name: str, sidecar: str, new_image_name: str) -> str:
    """The sidecar's name beside a renamed image: `a.txt` for `a.jpg` -> `a.dup1.jpg` is `a.dup1.txt`;
    `a.jpg.xmp` becomes `a.dup1.jpg.xmp`."""
    if sidecar.startswith(image_name):
        return new_image_name + sidecar[len(image_name):]
    stem, new_stem = os.path.splitext(image_name)[0], os.path.splitext(new_image_name)[0]
    return new_stem + sidecar[len(stem):]


_SUFFIX = re.compile(r"\.dup\d+$")


def suffixed(uri: str, n: int) -> str:
    """`folder/stem.dupN.ext`: the n-th alternative name for a destination that already exists."""
    folder, stem, ext = split_name(uri)
    return f"{folder}/{_SUFFIX.sub('', stem)}.dup{n}{ext}"
