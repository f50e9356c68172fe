"""The report page: one HTML file holding its data, thumbnails, style and script, and nothing else.

Data goes into `<script type="application/json">` blocks with every `<`, `>` and `&` escaped, so no
file name can close the block or open a tag; the viewer puts text on the page with `textContent`
only. A Content-Security-Policy lets the page load nothing from anywhere and run only its own script
(named by its SHA-256), so even markup that slipped through could not run or call out.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from typing import Any

__all__ = ["render_page", "safe_json"]

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


def safe_json(value: Any) -> str:
    """JSON that can sit inside a `<script>` block: no `<`, `>`, `&` or line separators, no NaN."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def render_page(title: str, data: dict[str, Any], thumbnails: list[str], image_sources: tuple[str, ...] = ()) -> str:
    """The whole report page; `image_sources` (`file:`, or the origin of presigned links) may serve the
    originals that the pair view shows full size."""
    assets = resources.files("dupflow.report")
    script = (assets / "viewer.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    images = " ".join(["data:", *image_sources])
    policy = (f"default-src 'none'; img-src {images}; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "base-uri 'none'; form-action 'none'")
    parts = {
        "CSP": html.escape(policy, quote=True),
        "TITLE": html.escape(title),
        "CSS": (assets / "viewer.css").read_text(encoding="utf-8"),
        "DATA": safe_json(data),
        "THUMBS": safe_json(thumbnails),
        "SCRIPT": script,
    }
    template = (assets / "page.html").read_text(encoding="utf-8")
    # one pass: text put in never gets scanned for placeholders again
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)
