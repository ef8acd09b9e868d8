"""Answers in the character set each modality reads (issue #18): findscu as a modality
configured for ISO_IR 100 and one for ISO_IR 192, names from the Trust's broker
(wlmscpfs) compared with what the source meant, transliterated by the documented rule
for the Latin-1 modality — never '?', never mojibake."""

from __future__ import annotations

from pathlib import Path

import pytest
from trailerlink_testing.dcmtk import findscu
from trailerlink_worklist import metrics
from trailerlink_worklist.model import Source

from .conftest import GERMAN, GREEK, IRISH, POLISH, WELSH, WELSH_2, booking
from .test_charsets_upstream import Broker, _publish

MEANT = {1: WELSH, 2: WELSH_2, 3: IRISH, 4: GERMAN, 5: POLISH, 6: GREEK}
# The documented transliteration (charsets.transliterate) for an ISO_IR 100 modality.
LATIN1 = {
    1: WELSH,
    2: "Prys-Ffwrn^Gwenllyn",
    3: IRISH,
    4: GERMAN,
    5: "Walesowa-Testowa^Lucja",
    6: "Papadopoulou^Eleni",
}
KEYS = ["AccessionNumber", "PatientName"]


@pytest.fixture
def served(make_app, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Our SCP serving the names as polled from wlmscpfs (-csk, Greek in ISO_IR 126)."""
    with Broker(tmp_path / "broker", ("-csk",), ae_title="NBSS_MWL") as wl:
        for i, name in MEANT.items():
            _publish(wl, i, name, "ISO_IR 126" if name == GREEK else "ISO_IR 192")
        app = make_app(
            upstream="dicom_mwl",
            upstream_mwl_port=wl.port,
            upstream_mwl_ae_title="NBSS_MWL",
            dicom_ae_character_sets="MG_LATIN1=ISO_IR 100,MG_UTF8=ISO_IR 192",
            dicom_uppercase_names_aes="MG_UPPER",
            dicom_default_character_set="ISO_IR 100",
        )
        app.upstream.poll_once()
    app.scp.start()
    return app


def _names(app, calling_ae: str, keys: list[str | bytes] = KEYS):  # type: ignore[no-untyped-def]
    result = findscu("127.0.0.1", app.scp.port, "TRAILERLINK_MWL", keys, calling_ae=calling_ae)
    assert result.final_status == "Success"
    charsets = {str(r.get("SpecificCharacterSet", "")) for r in result.responses}
    return {int(str(r.AccessionNumber)[3:]): str(r.PatientName) for r in result.responses}, charsets


def test_a_utf8_modality_gets_every_name_as_meant(served) -> None:  # type: ignore[no-untyped-def]
    names, charsets = _names(served, "MG_UTF8")
    assert names == MEANT
    assert charsets == {"ISO_IR 192"}


def test_a_latin1_modality_gets_the_documented_transliteration(served) -> None:  # type: ignore[no-untyped-def]
    before = metrics.TRANSLITERATED.labels("ISO_IR 100")._value.get()
    # Configured for ISO_IR 100 even though its query says UTF-8.
    names, charsets = _names(served, "MG_LATIN1", ["SpecificCharacterSet=ISO_IR 192", *KEYS])
    assert names == LATIN1
    assert charsets == {"ISO_IR 100"}
    assert not any("?" in n or "Ã" in n for n in names.values())
    assert metrics.TRANSLITERATED.labels("ISO_IR 100")._value.get() - before == 3


def test_unknown_aes_get_the_default_or_what_their_query_names(served) -> None:  # type: ignore[no-untyped-def]
    assert _names(served, "UNLISTED") == (LATIN1, {"ISO_IR 100"})
    names, charsets = _names(served, "UNLISTED", ["SpecificCharacterSet=ISO_IR 192", *KEYS])
    assert (names, charsets) == (MEANT, {"ISO_IR 192"})


def test_names_keep_their_case_unless_the_modality_asks_for_upper_case(served) -> None:  # type: ignore[no-untyped-def]
    names, _ = _names(served, "MG_UPPER", ["SpecificCharacterSet=ISO_IR 192", *KEYS])
    assert names == {i: n.upper() for i, n in MEANT.items()}
    assert names[1] == "LLEWELYN^SIÂN"


def test_a_name_without_a_latin_spelling_is_answered_in_utf8_not_mangled(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    first, last = app.worklist.window()
    app.worklist.replace_window(
        [booking(1, patient_name="Yamada^Hanako=山田^花子")], Source.DICOM_MWL, first, last
    )
    app.scp.start()
    names, charsets = _names(app, "UNLISTED")
    assert (names, charsets) == ({1: "Yamada^Hanako=山田^花子"}, {"ISO_IR 192"})


@pytest.mark.parametrize(
    "setting",
    [
        {"dicom_ae_character_sets": "MG1=LATIN-1"},
        {"dicom_ae_character_sets": "ISO_IR 100"},
        {"dicom_default_character_set": "UTF8"},
        {"upstream_mwl_undeclared_charset": "latin"},
        {"hl7_encoding": "klingon"},
    ],
)
def test_unknown_character_set_settings_stop_the_service_at_start(setting, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pydantic import ValidationError

    from .conftest import settings_for

    with pytest.raises(ValidationError):
        settings_for(tmp_path, **setting)
