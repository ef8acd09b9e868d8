"""The tus ``Upload-Metadata`` an uplink sends, parsed and validated strictly.

Wire form (tus 1.0.0): comma-separated pairs ``key SP base64(value)``. The ingest
accepts exactly these keys (values are UIDs, hashes and sizes — never patient data):

=====================  ========  ====================================================
key                    required  value
=====================  ========  ====================================================
sop_instance_uid       yes       DICOM UID of the object
study_instance_uid     yes       DICOM UID of its study
series_instance_uid    no        DICOM UID of its series
sop_class_uid          no        DICOM UID of its SOP class
transfer_syntax_uid    no        DICOM UID of the transfer syntax the modality sent
dataset_sha256         yes       64 lower-case hex: SHA-256 of the dataset bytes
file_sha256            no        64 lower-case hex: SHA-256 of the whole Part 10 file
sealed_size            yes       decimal: bytes of the sealed object (= Upload-Length)
key_id                 yes       data-centre key id, ``dc-`` + 16 lower-case hex
=====================  ========  ====================================================
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass

from trailerlink_common.identifiers import is_key_id, is_sha256_hex, is_uid

_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_HEADER_CHARS = 4096

REQUIRED = ("sop_instance_uid", "study_instance_uid", "dataset_sha256", "sealed_size", "key_id")
OPTIONAL = ("series_instance_uid", "sop_class_uid", "transfer_syntax_uid", "file_sha256")


class MetadataError(ValueError):
    """Upload-Metadata is malformed or incomplete; the message says which key and why."""


@dataclass(frozen=True)
class UploadMetadata:
    """The identity an upload claims; checked again against the sealed object."""

    sop_instance_uid: str
    study_instance_uid: str
    dataset_sha256: str
    sealed_size: int
    key_id: str
    series_instance_uid: str = ""
    sop_class_uid: str = ""
    transfer_syntax_uid: str = ""
    file_sha256: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> UploadMetadata:
        return cls(**data)  # type: ignore[arg-type]

    def encode(self) -> str:
        """The Upload-Metadata header value for this identity (what an uplink sends)."""
        pairs = []
        for key, value in self.to_dict().items():
            text = str(value)
            if text == "" and key in OPTIONAL:
                continue
            pairs.append(f"{key} {base64.b64encode(text.encode()).decode()}")
        return ",".join(pairs)


def _uid(name: str, value: str) -> str:
    if not is_uid(value):
        raise MetadataError(f"{name} is not a DICOM UID")
    return value


def parse_upload_metadata(header: str | None) -> UploadMetadata:
    """Parse and validate an Upload-Metadata header value.

    Raises :class:`MetadataError` for a missing header, bad syntax, bad base64, a key
    given twice, an unknown key, a missing required key or a value of the wrong form.
    """
    if not header:
        raise MetadataError("Upload-Metadata is required")
    if len(header) > MAX_HEADER_CHARS:
        raise MetadataError("Upload-Metadata is too long")
    values: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) not in (1, 2) or not _KEY.match(parts[0]):
            raise MetadataError("Upload-Metadata pair is malformed")
        key = parts[0]
        if key in values:
            raise MetadataError(f"Upload-Metadata key {key} appears twice")
        if key not in REQUIRED and key not in OPTIONAL:
            raise MetadataError(f"Upload-Metadata key {key} is not known")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            decoded = base64.b64decode(raw, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MetadataError(f"Upload-Metadata value of {key} is not base64 ASCII") from None
        values[key] = decoded
    missing = [k for k in REQUIRED if k not in values]
    if missing:
        raise MetadataError(f"Upload-Metadata lacks {', '.join(missing)}")
    for key in ("sop_instance_uid", "study_instance_uid"):
        _uid(key, values[key])
    for key in ("series_instance_uid", "sop_class_uid", "transfer_syntax_uid"):
        if values.get(key):
            _uid(key, values[key])
    if not is_sha256_hex(values["dataset_sha256"]):
        raise MetadataError("dataset_sha256 is not 64 lower-case hex digits")
    if values.get("file_sha256") and not is_sha256_hex(values["file_sha256"]):
        raise MetadataError("file_sha256 is not 64 lower-case hex digits")
    if not is_key_id(values["key_id"]):
        raise MetadataError("key_id is not a data-centre key id")
    size_text = values["sealed_size"]
    if not (size_text.isascii() and size_text.isdigit() and len(size_text) <= 18):
        raise MetadataError("sealed_size is not a decimal number")
    return UploadMetadata(
        sop_instance_uid=values["sop_instance_uid"],
        study_instance_uid=values["study_instance_uid"],
        dataset_sha256=values["dataset_sha256"],
        sealed_size=int(size_text),
        key_id=values["key_id"],
        series_instance_uid=values.get("series_instance_uid", ""),
        sop_class_uid=values.get("sop_class_uid", ""),
        transfer_syntax_uid=values.get("transfer_syntax_uid", ""),
        file_sha256=values.get("file_sha256", ""),
    )
