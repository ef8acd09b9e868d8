"""Names from the Trust's worklist broker reach the cache and the modality as the source
meant them (issue #18), with dcmtk ``wlmscpfs`` as the broker: without ``-csk`` it sends
its files' bytes with no Specific Character Set; with ``-csk`` it declares the files'.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode
from trailerlink_testing.dcmtk import Wlmscpfs, findscu, port_open
from trailerlink_testing.waiting import wait_until
from trailerlink_worklist import charsets, metrics
from trailerlink_worklist.model import to_dataset
from trailerlink_worklist.upstream.dicom_mwl import MwlPoller

from .conftest import GERMAN, GREEK, IRISH, POLISH, WELSH, WELSH_2, booking

SPS = "ScheduledProcedureStepSequence[0]"
UTF8_NAMES = {1: WELSH, 2: WELSH_2, 3: IRISH, 4: GERMAN, 5: POLISH}
LATIN1_NAMES = {6: "Ó Dálaigh^Máire", 7: "Bäcker^Grüße"}


class Broker(Wlmscpfs):
    """``wlmscpfs`` with extra options (``-csk``: return the files' character set)."""

    def __init__(self, directory: Path, options: tuple[str, ...], **kw: object) -> None:
        super().__init__(directory, **kw)  # type: ignore[arg-type]
        self.options = options

    def start(self) -> Broker:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [
                    "wlmscpfs",
                    *self.options,
                    "--data-files-path",
                    str(self.directory),
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        wait_until(lambda: self._alive() and port_open(self.port), 20, "wlmscpfs listening")
        return self


def _publish(broker: Wlmscpfs, i: int, name: str, charset: str) -> None:
    ds = to_dataset(booking(i, patient_name=name))
    ds.SpecificCharacterSet = charset
    broker.write(f"b{i}", ds)


@pytest.fixture(params=[(), ("-csk",)], ids=["wlmscpfs-undeclared", "wlmscpfs-csk"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    wl = Broker(
        tmp_path / "broker",
        tuple(request.param),
        ae_title="NBSS_MWL",
        log_path=tmp_path / "broker.log",
    )
    for i, name in UTF8_NAMES.items():
        _publish(wl, i, name, "ISO_IR 192")
    for i, name in LATIN1_NAMES.items():
        _publish(wl, i, name, "ISO_IR 100")
    wl.start()
    yield wl
    wl.stop()


def _cached_names(app) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.step.accession_number: c.step.patient_name for c in app.cache.steps()}


def _expected(names: dict[int, str]) -> dict[str, str]:
    return {f"ACC{i:05d}": name for i, name in names.items()}


def _fallbacks(charset: str) -> float:
    return metrics.CHARSET_FALLBACKS.labels("dicom_mwl", charset)._value.get()


def test_broker_names_reach_the_cache_and_a_utf8_modality_as_meant(make_app, broker) -> None:  # type: ignore[no-untyped-def]
    app = make_app(
        upstream="dicom_mwl", upstream_mwl_port=broker.port, upstream_mwl_ae_title="NBSS_MWL"
    )
    assert isinstance(app.upstream, MwlPoller)
    utf8_before, latin1_before = _fallbacks("ISO_IR 192"), _fallbacks("ISO_IR 100")
    assert app.upstream.poll_once() == len(UTF8_NAMES) + len(LATIN1_NAMES)
    expected = _expected(UTF8_NAMES | LATIN1_NAMES)
    assert _cached_names(app) == expected
    undeclared = "-csk" not in broker.options
    assert _fallbacks("ISO_IR 192") - utf8_before == (len(UTF8_NAMES) if undeclared else 0)
    assert _fallbacks("ISO_IR 100") - latin1_before == (len(LATIN1_NAMES) if undeclared else 0)

    app.scp.start()
    result = findscu(
        "127.0.0.1",
        app.scp.port,
        "TRAILERLINK_MWL",
        ["SpecificCharacterSet=ISO_IR 192", "AccessionNumber", "PatientName"],
    )
    assert result.final_status == "Success"
    assert {str(r.AccessionNumber): str(r.PatientName) for r in result.responses} == expected


def test_greek_declared_iso_ir_126_is_decoded(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Broker(tmp_path / "greek", ("-csk",), ae_title="NBSS_MWL") as wl:
        _publish(wl, 8, GREEK, "ISO_IR 126")
        _publish(wl, 1, WELSH, "ISO_IR 192")
        app = make_app(
            upstream="dicom_mwl", upstream_mwl_port=wl.port, upstream_mwl_ae_title="NBSS_MWL"
        )
        app.upstream.poll_once()
    assert _cached_names(app) == _expected({8: GREEK, 1: WELSH})


def test_undeclared_greek_is_read_with_the_configured_fallback(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Broker(tmp_path / "greek", (), ae_title="NBSS_MWL") as wl:
        _publish(wl, 8, GREEK, "ISO_IR 126")
        app = make_app(
            upstream="dicom_mwl",
            upstream_mwl_port=wl.port,
            upstream_mwl_ae_title="NBSS_MWL",
            upstream_mwl_undeclared_charset="ISO_IR 126",
        )
        app.upstream.poll_once()
    assert _cached_names(app) == _expected({8: GREEK})


def test_an_undecodable_name_is_refused_and_the_cached_step_kept(make_app, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Broker(tmp_path / "bad", ("-csk",), ae_title="NBSS_MWL") as wl:
        _publish(wl, 1, WELSH, "ISO_IR 192")
        _publish(wl, 2, IRISH, "ISO_IR 192")
        app = make_app(
            upstream="dicom_mwl", upstream_mwl_port=wl.port, upstream_mwl_ae_title="NBSS_MWL"
        )
        app.upstream.poll_once()
        # The broker's file for booking 2 now holds Latin-1 bytes but still says UTF-8.
        bad = to_dataset(booking(2, patient_name=IRISH))
        bad.SpecificCharacterSet = "ISO_IR 100"
        path = wl.write("b2", bad)
        data = path.read_bytes().replace(b"ISO_IR 100", b"ISO_IR 192")
        path.write_bytes(data)
        before = metrics.UPSTREAM_ITEMS_REFUSED.labels("dicom_mwl", "undecodable")._value.get()
        app.upstream.poll_once()
        after = metrics.UPSTREAM_ITEMS_REFUSED.labels("dicom_mwl", "undecodable")._value.get()
    assert after - before == 1
    assert _cached_names(app) == _expected({1: WELSH, 2: IRISH})  # never the mangled form


# --- the decoder on its own (every DICOM character set pydicom knows) --------------------
def _wire(ds: Dataset, implicit: bool = False) -> Dataset:
    """``ds`` as pynetdicom hands an identifier over: raw bytes, decoded lazily."""
    return decode(BytesIO(encode(ds, implicit, True)), implicit, True)


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", IRISH),
        ("ISO_IR 100", GERMAN),
        ("ISO_IR 192", WELSH_2),
        ("ISO_IR 192", POLISH),
        ("ISO_IR 101", POLISH),
        ("ISO_IR 126", GREEK),
        (["", "ISO 2022 IR 126"], "Papadopoulou^Eleni=" + GREEK),
        (["ISO 2022 IR 6", "ISO 2022 IR 100"], IRISH),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
    ],
)
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_declared_character_sets_decode_exactly(charset, name, implicit) -> None:  # type: ignore[no-untyped-def]
    ds = to_dataset(booking(1, patient_name=name))
    ds.SpecificCharacterSet = charset
    decoded = charsets.decode_identifier(_wire(ds, implicit))
    assert decoded.fallback is None
    assert str(decoded.dataset.PatientName) == name
    assert decoded.dataset.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "MGTRAILER1"


def test_undeclared_bytes_follow_the_auto_rule() -> None:
    for name, codec, expected in ((WELSH, "utf-8", "ISO_IR 192"), (IRISH, "latin-1", "ISO_IR 100")):
        ds = to_dataset(booking(1, patient_name="x"))
        raw = _wire(ds)
        from pydicom.dataelem import RawDataElement

        value = name.encode(codec)
        raw._dict[0x00100010] = RawDataElement(0x00100010, "PN", len(value), value, 0, False, True)
        decoded = charsets.decode_identifier(raw)
        assert (decoded.fallback, str(decoded.dataset.PatientName)) == (expected, name)


def test_unknown_terms_and_foreign_escapes_are_refused_with_a_reason() -> None:
    with pytest.raises(charsets.UndecodableText, match="unknown Specific Character Set"):
        charsets.strict_decode(b"abc", ["ISO_IR 999"], "PN")
    with pytest.raises(charsets.UndecodableText, match="escape sequence"):
        charsets.strict_decode(b"a=\x1b-F\xc4", ["", "ISO 2022 IR 100"], "PN")
    with pytest.raises(charsets.UndecodableText, match="not valid"):
        charsets.strict_decode(b"Si\xe2n", ["ISO_IR 192"], "PN")


def test_broker_answers_outside_the_window_are_skipped_counted_and_logged(  # type: ignore[no-untyped-def]
    make_app, captured_logs
) -> None:
    from datetime import timedelta

    from .conftest import today

    app = make_app(upstream="dicom_mwl")
    first, last = app.worklist.window()
    answers = []
    for i, offset in ((1, 0), (2, -1), (3, 30)):
        ds = to_dataset(booking(i, day=today() + timedelta(days=offset), patient_name=WELSH))
        ds.SpecificCharacterSet = "ISO_IR 192"
        answers.append(_wire(ds))
    before = metrics.UPSTREAM_ITEMS_REFUSED.labels("dicom_mwl", "out_of_window")._value.get()
    steps, keep = app.upstream._decode(answers, first, last)
    assert [s.accession_number for s in steps] == ["ACC00001"] and keep == set()
    after = metrics.UPSTREAM_ITEMS_REFUSED.labels("dicom_mwl", "out_of_window")._value.get()
    assert after - before == 2
    assert any(
        "outside the window skipped" in line and "'skipped': 2" in line
        for line in captured_logs.lines
    )
