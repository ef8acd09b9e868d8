"""Optional TLS for the modality's DICOM port and the HL7 MLLP links (off by default).

A trailer LAN is a small, closed network, but a Trust may require DICOM TLS (PS3.15
B.9, BCP 195) between modality and worklist, and TLS on its HL7 feed. The contexts
allow TLS 1.2 and 1.3 (many modalities stop at 1.2); with a client CA, peers must
present a certificate that CA signed.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(
    cert_file: Path,
    key_file: Path,
    client_ca_file: Path | None = None,
    require_client_cert: bool = True,
) -> ssl.SSLContext:
    """A listener's context. Raises ``OSError``/``ssl.SSLError`` for unreadable files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        ctx.load_verify_locations(client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A client's context: verifies the server against ``ca_file`` (else the system's
    CAs) and its host name; presents ``cert_file`` when given."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None
    )
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx
