"""The uplink-ingest HTTP contract: each shape survives its own encode and decode, and
the names and bytes on the wire are the ones pinned here (a rename fails a test; the
snapshot in proto/snapshots/wire.v1.json guards the names as well)."""

from __future__ import annotations

import base64
import json

import pytest
from trailerlink_events.wire import (
    CREATE_REFUSALS,
    PERMANENT_REFUSALS,
    KeyEntry,
    KeyListing,
    MetadataError,
    Receipt,
    UnsentReport,
    UploadMetadata,
    decode_key_entry,
    decode_metadata,
    decode_receipts_page,
    encode_metadata,
    encode_receipts_page,
    key_listing_parts,
    parse_upload_metadata,
    refusal_problem,
)

SOP = "1.2.826.0.1.3680043.10.999.1.1"
STUDY = "1.2.826.0.1.3680043.10.999.1"
SHA = "ab" * 32
KEY = "dc-0123456789abcdef"
OTHER_KEY = "dc-fedcba9876543210"


def _meta(**extra: str) -> UploadMetadata:
    return UploadMetadata(SOP, STUDY, SHA, 1234, KEY, **extra)  # type: ignore[arg-type]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_upload_metadata_header_is_the_pinned_bytes() -> None:
    header = _meta(transfer_syntax_uid="1.2.840.10008.1.2.1").encode()
    assert header == (
        f"sop_instance_uid {_b64(SOP)},study_instance_uid {_b64(STUDY)},"
        f"dataset_sha256 {_b64(SHA)},sealed_size {_b64('1234')},key_id {_b64(KEY)},"
        f"transfer_syntax_uid {_b64('1.2.840.10008.1.2.1')}"
    )


def test_upload_metadata_keys_are_pinned() -> None:
    full = _meta(
        series_instance_uid=STUDY + ".2",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        file_sha256="cd" * 32,
    )
    assert [pair.split(" ")[0] for pair in full.encode().split(",")] == [
        "sop_instance_uid",
        "study_instance_uid",
        "dataset_sha256",
        "sealed_size",
        "key_id",
        "series_instance_uid",
        "sop_class_uid",
        "transfer_syntax_uid",
        "file_sha256",
    ]


@pytest.mark.parametrize(
    "meta",
    [
        _meta(),
        _meta(
            series_instance_uid=STUDY + ".2",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.4.90",
            file_sha256="cd" * 32,
        ),
    ],
)
def test_upload_metadata_round_trips(meta: UploadMetadata) -> None:
    assert parse_upload_metadata(meta.encode()) == meta
    assert UploadMetadata.from_dict(meta.to_dict()) == meta


def test_encode_metadata_is_base64_per_value_in_order() -> None:
    assert encode_metadata({"a": "x y", "b": ""}) == "a eCB5,b "


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Upload-Metadata is required"),
        ("modality " + _b64("MG"), "Upload-Metadata key modality is not known"),
        ("sop_instance_uid !!", "Upload-Metadata value of sop_instance_uid is not base64 ASCII"),
        ("sop_instance_uid " + _b64(SOP), "Upload-Metadata lacks study_instance_uid"),
    ],
)
def test_the_ingest_reading_of_upload_metadata_is_strict(header: str | None, message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        parse_upload_metadata(header)


def test_refusal_problem_names_its_reason_and_permanence() -> None:
    problem = refusal_problem(400, "sealing key not held", "detail", "unknown_key")
    assert problem == {
        "type": "urn:trailerlink:upload-refused:unknown_key",
        "title": "sealing key not held",
        "status": 400,
        "detail": "detail",
        "reason": "unknown_key",
        "permanent": True,
    }
    assert refusal_problem(429, "t", "d", "rate_limited")["permanent"] is False
    assert frozenset({"unknown_key", "invalid_metadata", "too_large"}) == PERMANENT_REFUSALS
    assert PERMANENT_REFUSALS <= CREATE_REFUSALS.keys()


def _receipt(**changes: object) -> Receipt:
    fields: dict[str, object] = {
        "cursor": "17",
        "upload_id": "u17",
        "sop_instance_uid": SOP,
        "study_instance_uid": STUDY,
        "dataset_sha256": SHA,
        "outcome": "failed",
        "reason_code": "FAILURE_REASON_PACS_REFUSED",
        "reason": "refused",
        "stage": "pacs",
        "dicom_status": 0xA700,
        "stored_transfer_syntax_uid": "",
        "storage_committed": False,
        "duplicate": False,
        "permanent": True,
        "at": 1764300000.5,
    }
    fields.update(changes)
    return Receipt(**fields)  # type: ignore[arg-type]


def test_receipt_json_is_the_pinned_form() -> None:
    assert json.dumps(_receipt(outcome="delivered", dicom_status=0).to_json()) == (
        '{"cursor": "17", "upload_id": "u17", "sop_instance_uid": "' + SOP + '", '
        '"study_instance_uid": "' + STUDY + '", "dataset_sha256": "' + SHA + '", '
        '"outcome": "delivered", "reason_code": "FAILURE_REASON_PACS_REFUSED", '
        '"reason": "refused", "stage": "pacs", "dicom_status": 0, '
        '"stored_transfer_syntax_uid": "", "storage_committed": false, "duplicate": false, '
        '"permanent": true, "at": 1764300000.5}'
    )
    assert _receipt(pacs_ae_title="PACS").to_json()["pacs_ae_title"] == "PACS"


@pytest.mark.parametrize(
    "receipt",
    [
        _receipt(),
        _receipt(outcome="delivered", storage_committed=True, duplicate=True, dicom_status=0),
        _receipt(pacs_ae_title="PACS", at="2026-12-05T10:00:00Z", reason_code=3),
    ],
)
def test_receipt_round_trips(receipt: Receipt) -> None:
    assert Receipt.from_json(json.loads(json.dumps(receipt.to_json()))) == receipt


def test_the_uplink_reads_a_receipt_leniently() -> None:
    sparse = Receipt.from_json({"status": "DELIVERED", "cursor": 5, "at": True})
    assert (sparse.outcome, sparse.cursor, sparse.at, sparse.permanent) == (
        "delivered",
        "5",
        0.0,
        False,
    )
    assert Receipt.from_json({"outcome": "delivered", "dicom_status": "x"}).dicom_status == 0
    with pytest.raises(ValueError):
        Receipt.from_json({"outcome": "failed", "dicom_status": "x"})
    assert Receipt.from_json({}).cursor is None


def test_receipts_page_round_trips_and_falls_back_to_the_last_cursor() -> None:
    rows = [_receipt(cursor="3").to_json(), _receipt(cursor="4").to_json()]
    body = json.loads(json.dumps(encode_receipts_page(rows, "4", False)))
    assert list(body) == ["receipts", "next_cursor", "more"]
    page = decode_receipts_page(body)
    assert [Receipt.from_json(r).cursor for r in page.receipts] == ["3", "4"]
    assert (page.cursor_after(), page.more) == ("4", False)
    older = decode_receipts_page({"receipts": rows})
    assert (older.cursor_after(), older.more) == ("4", True)
    assert decode_receipts_page({}).cursor_after() is None


def test_key_listing_round_trips() -> None:
    listing = KeyListing(KEY, [KeyEntry(KEY, "PEM-A", 1764300000.0), KeyEntry(OTHER_KEY, "PEM-B")])
    body = json.loads(json.dumps(listing.to_json()))
    assert body == {
        "current_key_id": KEY,
        "keys": [
            {"key_id": KEY, "public_key_pem": "PEM-A", "created_at": 1764300000.0},
            {"key_id": OTHER_KEY, "public_key_pem": "PEM-B", "created_at": None},
        ],
    }
    current, entries = key_listing_parts(body)
    assert KeyListing(str(current), [decode_key_entry(e) for e in entries]) == listing


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"keys": {}}, "not a key listing"),
        ({"keys": ["x"]}, "key entry is not an object"),
        (
            {"keys": [{"key_id": "dc-1", "public_key_pem": "P"}]},
            "key entry lacks a key id or a PEM",
        ),
    ],
)
def test_a_malformed_key_listing_is_refused(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        for entry in key_listing_parts(body)[1]:
            decode_key_entry(entry)


def test_unsent_report_round_trips() -> None:
    report = UnsentReport(KEY, {KEY: 12, OTHER_KEY: 0}, {OTHER_KEY: 340})
    body = json.loads(json.dumps(report.to_json()))
    assert list(body) == ["sealing_key_id", "unsent_by_key_id", "resendable_by_key_id"]
    assert UnsentReport.from_json(body) == report
    older = {"sealing_key_id": KEY, "unsent_by_key_id": {KEY: 1}}
    assert UnsentReport.from_json(older) == UnsentReport(KEY, {KEY: 1}, {})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "report must be a JSON object"),
        ({"sealing_key_id": "k"}, "sealing_key_id is not a key id"),
        ({"unsent_by_key_id": {KEY: -1}}, "unsent_by_key_id counts must be non-negative"),
        ({"unsent_by_key_id": {"k": 1}}, "unsent_by_key_id has a key that is not a key id"),
        (
            {"unsent_by_key_id": {}, "resendable_by_key_id": {KEY: True}},
            "resendable_by_key_id counts must be non-negative",
        ),
    ],
)
def test_the_ingest_reading_of_an_unsent_report_is_strict(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        UnsentReport.from_json(body)


def test_decode_metadata_reads_the_pairs_a_peer_sent() -> None:
    pairs = {"sop_instance_uid": SOP, "key_id": "not checked here"}
    assert decode_metadata(encode_metadata(pairs)) == pairs
    with pytest.raises(MetadataError, match="key modality is not known"):
        decode_metadata("modality " + _b64("MG"))
