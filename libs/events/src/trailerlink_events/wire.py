"""The HTTP contract between a trailer's uplink and the data centre's ingest.

One module owns every name and encoding the two exchange besides the tus protocol
itself, so the sender, the receiver and the test peers cannot drift apart:

* the tus ``Upload-Metadata`` of a creation (:class:`UploadMetadata`; keys and values in
  the table below, each value base64 as tus 1.0.0 says);
* a refused creation's RFC 9457 problem (:data:`REFUSAL_PROBLEM_PREFIX`,
  :data:`CREATE_REFUSALS`);
* ``GET /v1/receipts`` (:class:`Receipt`, :func:`encode_receipts_page`,
  :func:`decode_receipts_page`);
* ``GET /v1/keys`` (:class:`KeyListing`, :func:`key_listing_parts`,
  :func:`decode_key_entry`);
* ``PUT /v1/keys/unsent`` (:class:`UnsentReport`).

Renaming a key or field here changes the wire: ``libs/events/tests/test_wire.py`` pins
them. Each side keeps its own strictness: the ingest parses what a trailer sends
strictly (:func:`parse_upload_metadata`, :meth:`UnsentReport.from_json`); the uplink
reads the ingest's answers leniently (an older ingest may lack a field).

Upload-Metadata (values are UIDs, hashes and sizes — never patient data):

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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from trailerlink_common.identifiers import is_key_id, is_sha256_hex, is_uid

# --- tus Upload-Metadata -------------------------------------------------------------

UPLOAD_METADATA_REQUIRED = (
    "sop_instance_uid",
    "study_instance_uid",
    "dataset_sha256",
    "sealed_size",
    "key_id",
)
UPLOAD_METADATA_OPTIONAL = (
    "series_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "file_sha256",
)
MAX_METADATA_HEADER_CHARS = 4096
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class MetadataError(ValueError):
    """Upload-Metadata is malformed or incomplete; the message says which key and why."""


def encode_metadata(pairs: Mapping[str, str]) -> str:
    """An Upload-Metadata header value: ``key base64(value)`` pairs joined by commas, in
    the mapping's order (tus 1.0.0)."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


@dataclass(frozen=True)
class UploadMetadata:
    """The identity an upload claims; the ingest checks it again against the sealed
    object. Field order is the order of the pairs on the wire."""

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

    def pairs(self) -> dict[str, str]:
        """Every key with its text value, in wire order (empty optional values too)."""
        return {key: str(value) for key, value in self.to_dict().items()}

    def encode(self) -> str:
        """The Upload-Metadata header value for this identity; empty optional values are
        left out."""
        return encode_metadata(
            {k: v for k, v in self.pairs().items() if v != "" or k not in UPLOAD_METADATA_OPTIONAL}
        )


def _uid(name: str, value: str) -> str:
    if not is_uid(value):
        raise MetadataError(f"{name} is not a DICOM UID")
    return value


def decode_metadata(header: str | None) -> dict[str, str]:
    """The pairs of an Upload-Metadata header, decoded; only the syntax, the base64 and
    the keys are checked (:func:`parse_upload_metadata` checks the values too).
    Raises :class:`MetadataError`."""
    if not header:
        raise MetadataError("Upload-Metadata is required")
    if len(header) > MAX_METADATA_HEADER_CHARS:
        raise MetadataError("Upload-Metadata is too long")
    values: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) not in (1, 2) or not _KEY.match(parts[0]):
            raise MetadataError("Upload-Metadata pair is malformed")
        key = parts[0]
        if key in values:
            raise MetadataError(f"Upload-Metadata key {key} appears twice")
        if key not in UPLOAD_METADATA_REQUIRED and key not in UPLOAD_METADATA_OPTIONAL:
            raise MetadataError(f"Upload-Metadata key {key} is not known")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            decoded = base64.b64decode(raw, validate=True).decode("ascii")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise MetadataError(f"Upload-Metadata value of {key} is not base64 ASCII") from None
        values[key] = decoded
    return values


def parse_upload_metadata(header: str | None) -> UploadMetadata:
    """Parse and validate an Upload-Metadata header value (the ingest's strictness).

    Raises :class:`MetadataError` for a missing header, bad syntax, bad base64, a key
    given twice, an unknown key, a missing required key or a value of the wrong form.
    """
    values = decode_metadata(header)
    missing = [k for k in UPLOAD_METADATA_REQUIRED if k not in values]
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


# --- a refused creation (RFC 9457 problem+json) ----------------------------------------

PROBLEM_CONTENT_TYPE = "application/problem+json"
REFUSAL_PROBLEM_PREFIX = "urn:trailerlink:upload-refused:"
CREATE_REFUSALS: dict[str, bool] = {
    # reason -> permanent: the same request can never succeed, so the uplink fails that
    # object alone (ObjectFailed) instead of retrying it ahead of younger work.
    "unknown_key": True,
    "invalid_metadata": True,
    "too_large": True,
    # About the trailer or this moment, not the object: retrying is right.
    "no_certificate": False,
    "trailer_refused": False,
    "rate_limited": False,
    "too_many_uploads": False,
    "busy": False,
    "bad_protocol": False,
    "other": False,
}
PERMANENT_REFUSALS = frozenset(reason for reason, permanent in CREATE_REFUSALS.items() if permanent)


def refusal_problem(status: int, title: str, detail: str, reason: str) -> dict[str, object]:
    """The problem+json body of a refused creation: its reason and whether the same
    request could ever succeed."""
    return {
        "type": REFUSAL_PROBLEM_PREFIX + reason,
        "title": title,
        "status": status,
        "detail": detail,
        "reason": reason,
        "permanent": CREATE_REFUSALS.get(reason, False),
    }


# --- GET /v1/receipts ------------------------------------------------------------------

RECEIPT_OUTCOMES = ("delivered", "failed")


@dataclass(frozen=True)
class Receipt:
    """One outcome for one upload, as the ingest answers it and a trailer reads it.

    ``at`` is when the outcome happened (epoch seconds; an ISO 8601 text is read too).
    ``pacs_ae_title`` is read when present and written only when set (the ingest does not
    name its PACS today). ``cursor`` is None when the answer lacked one."""

    cursor: str | None
    upload_id: str
    sop_instance_uid: str
    study_instance_uid: str
    dataset_sha256: str
    outcome: str
    reason_code: str | int = ""
    reason: str = ""
    stage: str = ""
    dicom_status: int = 0
    stored_transfer_syntax_uid: str = ""
    storage_committed: bool = False
    duplicate: bool = False
    permanent: bool = False
    at: float | str = 0.0
    pacs_ae_title: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cursor": self.cursor,
            "upload_id": self.upload_id,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "dataset_sha256": self.dataset_sha256,
            "outcome": self.outcome,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "stage": self.stage,
            "dicom_status": self.dicom_status,
            "stored_transfer_syntax_uid": self.stored_transfer_syntax_uid,
            "storage_committed": self.storage_committed,
            "duplicate": self.duplicate,
            "permanent": self.permanent,
            "at": self.at,
        }
        if self.pacs_ae_title:
            out["pacs_ae_title"] = self.pacs_ae_title
        return out

    @classmethod
    def from_json(cls, receipt: Mapping[str, Any]) -> Receipt:
        """A receipt from the ingest, read leniently (a missing field is its empty value;
        ``status`` is an older name of ``outcome``). Raises ValueError/TypeError only for
        a failure's ``dicom_status`` that is not a number (a delivery's is not read)."""
        outcome = str(receipt.get("outcome") or receipt.get("status") or "").lower()
        cursor = receipt.get("cursor")
        code = receipt.get("reason_code")
        at = receipt.get("at")
        try:
            dicom_status = int(receipt.get("dicom_status") or 0)
        except (TypeError, ValueError):
            if outcome == "failed":
                raise
            dicom_status = 0
        return cls(
            cursor=None if cursor is None else str(cursor),
            upload_id=str(receipt.get("upload_id") or ""),
            sop_instance_uid=str(receipt.get("sop_instance_uid") or ""),
            study_instance_uid=str(receipt.get("study_instance_uid") or ""),
            dataset_sha256=str(receipt.get("dataset_sha256") or ""),
            outcome=outcome,
            # protoc's enum values arrive as ints from some peers; names as text.
            reason_code=code if isinstance(code, int) else str(code or ""),
            reason=str(receipt.get("reason") or ""),
            stage=str(receipt.get("stage") or ""),
            dicom_status=dicom_status,
            stored_transfer_syntax_uid=str(receipt.get("stored_transfer_syntax_uid") or ""),
            storage_committed=bool(receipt.get("storage_committed")),
            duplicate=bool(receipt.get("duplicate")),
            permanent=bool(receipt.get("permanent")),
            at=at if isinstance(at, int | float | str) and not isinstance(at, bool) else 0.0,
            pacs_ae_title=str(receipt.get("pacs_ae_title") or ""),
        )


def encode_receipts_page(
    receipts: Sequence[Mapping[str, Any]], next_cursor: str, more: bool
) -> dict[str, Any]:
    """The body of ``GET /v1/receipts``: a page of receipts (each :meth:`Receipt.to_json`),
    the cursor to ask ``after`` next, and whether the page was full."""
    return {"receipts": list(receipts), "next_cursor": next_cursor, "more": more}


@dataclass(frozen=True)
class ReceiptsPage:
    """A receipts answer as the uplink reads it: receipts still raw (each decoded with
    :meth:`Receipt.from_json` when handled, so one bad receipt stops the page there)."""

    receipts: list[Mapping[str, Any]]
    next_cursor: object
    more: bool

    def cursor_after(self) -> str | None:
        """The cursor to ask ``after`` next: ``next_cursor``, else the last receipt's;
        None if neither (keep the one asked with)."""
        cursor = self.next_cursor
        if cursor is None and self.receipts:
            cursor = self.receipts[-1].get("cursor")
        return None if cursor is None else str(cursor)


def decode_receipts_page(body: Any) -> ReceiptsPage:
    """Read a receipts answer leniently: no ``next_cursor`` means the last receipt's
    cursor; no ``more`` means there may be more. Raises AttributeError if the body is not
    a JSON object."""
    return ReceiptsPage(
        receipts=body.get("receipts") or [],
        next_cursor=body.get("next_cursor"),
        more=bool(body.get("more", True)),
    )


# --- GET /v1/keys ----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyEntry:
    """One of the data centre's sealing public keys (``created_at``: epoch seconds, null
    when unknown; a trailer does not read it)."""

    key_id: str
    public_key_pem: str
    created_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "public_key_pem": self.public_key_pem,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class KeyListing:
    """The body of ``GET /v1/keys``: the current sealing key id and every public key."""

    current_key_id: str
    keys: list[KeyEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"current_key_id": self.current_key_id, "keys": [k.to_json() for k in self.keys]}


def key_listing_parts(body: Any) -> tuple[object, list[Any]]:
    """(the ``current_key_id`` as sent, the raw key entries) of a key listing; ValueError
    if it is not one. The caller checks each entry (:func:`decode_key_entry`) and that
    the current id is among them."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ValueError("not a key listing")
    return body.get("current_key_id"), body["keys"]


def decode_key_entry(entry: Any) -> KeyEntry:
    """One listed key: a key id and a PEM text (not yet checked as a key); ValueError
    otherwise."""
    if not isinstance(entry, dict):
        raise ValueError("key entry is not an object")
    key_id, pem = entry.get("key_id"), entry.get("public_key_pem")
    if not (isinstance(key_id, str) and is_key_id(key_id) and isinstance(pem, str)):
        raise ValueError("key entry lacks a key id or a PEM")
    created = entry.get("created_at")
    return KeyEntry(
        key_id=key_id,
        public_key_pem=pem,
        created_at=float(created)
        if isinstance(created, int | float) and not isinstance(created, bool)
        else None,
    )


# --- PUT /v1/keys/unsent ---------------------------------------------------------------

MAX_REPORTED_KEYS = 64
UNSENT_REPORT_MAX_BYTES = 16384


@dataclass(frozen=True)
class UnsentReport:
    """A trailer's count of queued-not-delivered objects per sealing key id, and of the
    objects a resend could still queue (for key rotation)."""

    sealing_key_id: str
    unsent_by_key_id: dict[str, int]
    resendable_by_key_id: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "sealing_key_id": self.sealing_key_id,
            "unsent_by_key_id": self.unsent_by_key_id,
            "resendable_by_key_id": self.resendable_by_key_id,
        }

    @classmethod
    def from_json(cls, body: object) -> UnsentReport:
        """A report parsed strictly (the ingest's reading); ValueError says what is wrong.
        ``resendable_by_key_id`` may be absent (an older uplink)."""
        if not isinstance(body, dict):
            raise ValueError("report must be a JSON object")
        sealing = body.get("sealing_key_id", "")
        if not isinstance(sealing, str) or (sealing and not is_key_id(sealing)):
            raise ValueError("sealing_key_id is not a key id")
        unsent = _counts(body.get("unsent_by_key_id"), "unsent_by_key_id")
        resendable = (
            {}
            if body.get("resendable_by_key_id") is None
            else _counts(body["resendable_by_key_id"], "resendable_by_key_id")
        )
        return cls(sealing, unsent, resendable)


def _counts(value: object, name: str) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_REPORTED_KEYS:
        raise ValueError(f"{name} must be an object of key id to count")
    out: dict[str, int] = {}
    for key_id, count in value.items():
        if not is_key_id(key_id):
            raise ValueError(f"{name} has a key that is not a key id")
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count < 2**40:
            raise ValueError(f"{name} counts must be non-negative integers")
        out[key_id] = count
    return out


# --- the compatibility baseline (proto/snapshots/wire.v1.json) -------------------------

FROZEN = ("upload_metadata.keys", "upload_metadata.required", "refusal.type_prefix")
"""Names that may not change at all: the ingest refuses an Upload-Metadata key it does
not know and requires every required one, so adding a key breaks an older ingest or an
older uplink (a new header is the way to add a fact, as ``traceparent`` was)."""


def shape() -> dict[str, list[str]]:
    """Every name on the wire, taken from what the encoders write: a rename or removal
    shows here and :func:`breaking_changes` reports it against the snapshot."""
    receipt = Receipt(
        cursor="1", upload_id="u", sop_instance_uid="1.2", study_instance_uid="1.2",
        dataset_sha256="0" * 64, outcome="delivered", pacs_ae_title="PACS",
    )  # fmt: skip
    entry = KeyEntry("dc-0000000000000000", "pem", 0.0)
    return {
        "upload_metadata.keys": list(
            UploadMetadata("1.2", "1.2", "0" * 64, 1, "dc-0000000000000000").pairs()
        ),
        "upload_metadata.required": list(UPLOAD_METADATA_REQUIRED),
        "refusal.type_prefix": [REFUSAL_PROBLEM_PREFIX],
        "refusal.problem": list(refusal_problem(400, "t", "d", "other")),
        "refusal.reasons": sorted(CREATE_REFUSALS),
        "refusal.permanent_reasons": sorted(PERMANENT_REFUSALS),
        "receipts_page": list(encode_receipts_page([], "0", False)),
        "receipt": list(receipt.to_json()),
        "receipt.outcomes": list(RECEIPT_OUTCOMES),
        "key_listing": list(KeyListing(entry.key_id, [entry]).to_json()),
        "key_listing.key": list(entry.to_json()),
        "unsent_report": list(UnsentReport("", {}, {}).to_json()),
    }


def breaking_changes(baseline: dict[str, list[str]], new: dict[str, list[str]]) -> list[str]:
    """What ``new`` breaks against ``baseline``: a name removed or renamed anywhere, or
    any change to a :data:`FROZEN` list. Other additions are allowed (each reader
    ignores a field it does not know)."""
    problems = []
    for part, names in sorted(baseline.items()):
        current = new.get(part, [])
        if part in FROZEN and current != names:
            problems.append(f"{part} changed: {names} -> {current}")
            continue
        problems += [f"{part}: {name} removed or renamed" for name in names if name not in current]
    return problems


def additions(baseline: dict[str, list[str]], new: dict[str, list[str]]) -> list[str]:
    """Names in ``new`` that the baseline does not record yet."""
    return [
        f"{part}: {name}"
        for part, names in sorted(new.items())
        for name in names
        if name not in baseline.get(part, [])
    ]
