"""Canonical JSON and the content hash of a definition.

The canonical form is the definition's ``model_dump(mode="json")`` encoded with sorted
keys and no whitespace, so two equal definitions always hash the same however they were
produced (builder, YAML or JSON).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(data: Any) -> bytes:
    """Encode JSON-compatible data canonically: sorted keys, no whitespace, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash_of(data: Any) -> str:
    """Return the SHA-256 hex digest of the canonical JSON of ``data``."""
    return hashlib.sha256(canonical_json(data)).hexdigest()
