"""Which storage options are credentials. A credential never becomes a flow parameter (Prefect stores
those in its database), a log line, an artifact or an output: it reaches the run out of band."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["SAFE_WAYS", "secret_keys", "split_secrets"]

# fsspec/s3fs/gcsfs/adlfs option names that hold credentials; nested mappings (client_kwargs) included.
_SECRET = re.compile(r"(secret|token|password|passwd|credential|private|signature|sas|(^|_)key(_id)?$)", re.I)

SAFE_WAYS = ("give credentials out of band: export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) where "
             "the flow and its workers run, use a profile (storage_options: {profile: NAME}), or keep them in a "
             "Prefect Secret block and name it with storage_secret: BLOCK")


def secret_keys(options: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the options in `options` that hold credentials."""
    found = []
    for key, value in options.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found += secret_keys(value, f"{name}.")
        elif _SECRET.search(str(key)) and value not in (None, ""):
            found.append(name)
    return found


def split_secrets(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`options` as (what may be recorded, the credentials); nested mappings are split alike."""
    public: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, Mapping):
            pub, sec = split_secrets(value)
            if pub:
                public[key] = pub
            if sec:
                secret[key] = sec
        elif _SECRET.search(str(key)) and value not in (None, ""):
            secret[key] = value
        else:
            public[key] = value
    return public, secret
