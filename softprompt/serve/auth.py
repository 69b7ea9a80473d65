"""Bearer secrets (the admin token and the API key): read from a file, compared in constant time.

Both are read the same way and checked by the same function, so the two guards cannot drift apart. This module
imports no model code: `softprompt predict --server` reads its key with it too.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from ..utils.errors import SoftpromptError

MIN_SECRET_CHARS = 16


def read_secret(flag: str, path: str) -> str:
    """The secret in `path` (surrounding whitespace stripped), or a one-line error naming the flag and file.

    Refuses short secrets (guessable) and characters an HTTP header cannot carry as they are (anything but
    visible ASCII), which would otherwise fail later as a puzzling 401."""
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SoftpromptError(f"{flag} {path}: {exc}") from None
    if len(secret) < MIN_SECRET_CHARS:
        raise SoftpromptError(f"{flag} {path}: use a secret of at least {MIN_SECRET_CHARS} characters")
    if not all("!" <= char <= "~" for char in secret):
        raise SoftpromptError(f"{flag} {path}: use visible ASCII characters only (no spaces), as HTTP headers carry")
    return secret


def bearer_matches(authorization: str | bytes | None, secret: str) -> bool:
    """Whether an `Authorization` header value is `Bearer <secret>`.

    Both sides are hashed before `hmac.compare_digest`, so the time taken reveals neither the secret's
    characters nor its length. A str header is the latin-1 decoding Starlette makes of the raw bytes."""
    if isinstance(authorization, str):
        authorization = authorization.encode("latin-1", "replace")
    scheme, _, token = (authorization or b"").partition(b" ")
    given = hashlib.sha256(token.strip()).digest()
    wanted = hashlib.sha256(secret.encode()).digest()
    return hmac.compare_digest(given, wanted) and scheme.lower() == b"bearer"
