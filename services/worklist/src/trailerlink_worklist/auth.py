"""Who may use the staff page: HTTP Basic against a file of scrypt-hashed passwords,
and CSRF tokens for every form.

The trailer LAN is small and has no identity provider, so each radiographer has a
line ``name:scrypt$<n>$<r>$<p>$<salt>$<hash>`` in a file mounted from a Kubernetes
Secret (make a line with ``trailerlink-worklist hash-password NAME``). With no file
configured, nobody gets in: there is no open access, least of all to write.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from pathlib import Path

_N, _R, _P = 2**14, 8, 1
_VERIFIED_SECONDS = 300.0


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """A storable scrypt hash of ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str, password: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_credentials(path: Path | None) -> dict[str, str]:
    """``name -> stored hash`` from the credentials file ({} when there is none)."""
    if path is None:
        return {}
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, stored = line.split(":", 1)
        found[name.strip()] = stored.strip()
    return found


class StaffAuth:
    """Checks Basic credentials; remembers a success briefly (scrypt is slow on purpose)."""

    def __init__(self, credentials: dict[str, str]) -> None:
        self.credentials = credentials
        self._verified: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.credentials)

    def check(self, authorization: str | None) -> str | None:
        """The user name for a valid ``Authorization: Basic`` header, else None."""
        if not authorization or not authorization.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        stored = self.credentials.get(name)
        if not sep or stored is None:
            return None
        fingerprint = hashlib.sha256(f"{name}\0{password}\0{stored}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            if self._verified.get(fingerprint, 0) > now:
                return name
        if not verify_password(stored, password):
            return None
        with self._lock:
            self._verified[fingerprint] = now + _VERIFIED_SECONDS
        return name


class CsrfTokens:
    """HMAC tokens bound to the user and issue time (hidden field of every form)."""

    def __init__(self, key: bytes | None = None, max_age_seconds: float = 8 * 3600) -> None:
        self.key = key or secrets.token_bytes(32)
        self.max_age_seconds = max_age_seconds

    def issue(self, user: str) -> str:
        issued = str(int(time.time()))
        return f"{issued}.{self._mac(user, issued)}"

    def valid(self, user: str, token: str) -> bool:
        issued, _, mac = token.partition(".")
        if not issued.isdigit() or not mac:
            return False
        if time.time() - int(issued) > self.max_age_seconds:
            return False
        return hmac.compare_digest(mac, self._mac(user, issued))

    def _mac(self, user: str, issued: str) -> str:
        return hmac.new(self.key, f"{user}\0{issued}".encode(), hashlib.sha256).hexdigest()
