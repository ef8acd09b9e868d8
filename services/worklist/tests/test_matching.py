"""The matching engine on its own (PS3.4 C.2.2.2): no network, no cache."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from trailerlink_worklist.answers import AnswerProfile, choose_charset, prepare
from trailerlink_worklist.matching import QueryError, compile_query, compile_record
from trailerlink_worklist.model import to_dataset

from .conftest import booking


def record(i: int = 1, **changes: str):  # type: ignore[no-untyped-def]
    step = booking(i, **changes)
    return compile_record(to_dataset(step), step.key)


def query(sps: dict[str, str] | None = None, **top: str) -> Dataset:
    q = Dataset()
    for k, v in top.items():
        setattr(q, k, v)
    item = Dataset()
    for k, v in (sps or {}).items():
        setattr(item, k, v)
    q.ScheduledProcedureStepSequence = [item]
    return q


def matches(q: Dataset, r, **kw) -> bool:  # type: ignore[no-untyped-def]
    return compile_query(q, **kw).matches(r)


def test_universal_matching_matches_everything_and_returns_the_value() -> None:
    r = record(1)
    q = query(PatientName="", PatientID="")
    assert matches(q, r)
    answer = compile_query(q).response(r)
    assert str(answer.PatientName) == "TEST^BRAVO"
    assert answer.PatientID == "9990000026"


def test_single_value_matching_is_exact_for_ids() -> None:
    r = record(1)
    assert matches(query(PatientID="9990000026"), r)
    assert not matches(query(PatientID="999000002"), r)
    assert matches(query(AccessionNumber="ACC00001"), r)
    assert not matches(query(AccessionNumber="acc00001"), r)  # not PN: case matters


def test_person_names_match_ignoring_case_and_trailing_empty_components() -> None:
    r = record(0)  # TEST^ALPHA
    assert matches(query(PatientName="test^alpha"), r)
    assert matches(query(PatientName="TEST^ALPHA^^^"), r)
    assert not matches(query(PatientName="test^alpha"), r, pn_case_sensitive=True)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("TEST^A*", True),
        ("test^a*", True),
        ("TEST^?LPHA", True),
        ("*ALPHA", True),
        ("TEST^B*", False),
        ("T?ST^ALPH", False),
        ("*", True),
    ],
)
def test_wildcards_in_person_names(pattern: str, expected: bool) -> None:
    assert matches(query(PatientName=pattern), record(0)) is expected


def test_wildcards_are_literal_in_dates_and_uids() -> None:
    with pytest.raises(QueryError):
        compile_query(query({"ScheduledProcedureStepStartDate": "2026*"}))
    assert not matches(query(StudyInstanceUID="1.2.*"), record(0))


def test_date_ranges_in_the_scheduled_step() -> None:
    r = record(3)
    day = r.items[0x00400100][0].values[0x00400002][1][0]
    assert matches(query({"ScheduledProcedureStepStartDate": f"{day}-"}), r)
    assert matches(query({"ScheduledProcedureStepStartDate": f"-{day}"}), r)
    assert matches(query({"ScheduledProcedureStepStartDate": f"{day}-{day}"}), r)
    assert not matches(query({"ScheduledProcedureStepStartDate": "19000101-19991231"}), r)


def test_time_ranges_include_their_bounds() -> None:
    r = record(0, time="093000")
    assert matches(query({"ScheduledProcedureStepStartTime": "0930-1000"}), r)
    assert matches(query({"ScheduledProcedureStepStartTime": "0900-0930"}), r)
    assert matches(query({"ScheduledProcedureStepStartTime": "-09"}), r)
    assert not matches(query({"ScheduledProcedureStepStartTime": "0931-"}), r)


def test_combined_date_time_range_spans_days() -> None:
    r = record(0, time="083000")
    day = r.items[0x00400100][0].values[0x00400002][1][0]
    q = query(
        {
            "ScheduledProcedureStepStartDate": f"19991231-{day}",
            "ScheduledProcedureStepStartTime": "0900-1000",
        }
    )
    # Combined: from 1999-12-31 09:00 to today 10:00 includes today 08:30.
    assert matches(q, r, combined_datetime=True)
    # Each on its own: 08:30 is not within 09:00-10:00.
    assert not matches(q, r, combined_datetime=False)


def test_list_of_uids() -> None:
    r = record(2)
    uid = "1.2.826.0.1.3680043.8.498.700002"
    q = Dataset()
    q.StudyInstanceUID = ["1.2.3", uid]
    assert compile_query(q).matches(r)
    q.StudyInstanceUID = ["1.2.3", "1.2.4"]
    assert not compile_query(q).matches(r)


def test_sequence_matching_on_modality_station_and_location() -> None:
    r = record(0)
    assert matches(
        query(
            {
                "Modality": "MG",
                "ScheduledStationAETitle": "MGTRAILER1",
                "ScheduledProcedureStepLocation": "SITE-TRL01",
            }
        ),
        r,
    )
    assert not matches(query({"Modality": "CT"}), r)
    assert not matches(query({"ScheduledStationAETitle": "OTHER"}), r)
    assert not matches(query({"ScheduledProcedureStepLocation": "SITE-ELSEWHERE"}), r)


def test_answer_holds_only_requested_keys_and_empty_unknown_ones() -> None:
    q = query({"Modality": "", "ScheduledProcedureStepID": ""}, PatientName="", OtherPatientIDs="")
    answer = compile_query(q).response(record(0))
    assert {e.keyword for e in answer} == {
        "PatientName",
        "OtherPatientIDs",
        "ScheduledProcedureStepSequence",
    }
    assert answer.OtherPatientIDs in (None, "")
    item = answer.ScheduledProcedureStepSequence[0]
    assert {e.keyword for e in item} == {"Modality", "ScheduledProcedureStepID"}


def test_empty_sequence_key_returns_the_whole_item() -> None:
    q = Dataset()
    q.ScheduledProcedureStepSequence = []
    answer = compile_query(q).response(record(0))
    assert answer.ScheduledProcedureStepSequence[0].Modality == "MG"


def test_character_set_of_answers() -> None:
    ascii_answer = compile_query(query(PatientName="")).response(record(0))
    assert choose_charset(ascii_answer, [], "ISO_IR 100") is None
    latin = compile_query(query(PatientName="")).response(record(4))  # TEST^ÅSA
    assert choose_charset(latin, [], "ISO_IR 100") == "ISO_IR 100"
    assert choose_charset(latin, ["ISO_IR 192"], "ISO_IR 100") == "ISO_IR 192"
    greek = compile_query(query(PatientName="")).response(record(0, patient_name="TEST^ΑΛΦΑ"))
    assert choose_charset(greek, ["ISO_IR 100"], "ISO_IR 100") == "ISO_IR 192"  # as it stands
    assert prepare(greek, ["ISO_IR 100"], AnswerProfile(), "ISO_IR 100")  # transliterated
    assert (greek.SpecificCharacterSet, str(greek.PatientName)) == ("ISO_IR 100", "TEST^ALFA")


# --- properties ----------------------------------------------------------------------
_NAME_PART = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZÅÖÉ'-", min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(family=_NAME_PART, given_name=_NAME_PART, data=st.data())
def test_a_name_matches_itself_and_any_wildcard_of_it(
    family: str, given_name: str, data: st.DataObject
) -> None:
    name = f"{family}^{given_name}"
    r = record(0, patient_name=name)
    assert matches(query(PatientName=name), r)
    assert matches(query(PatientName=name.lower()), r)
    cut = data.draw(st.integers(0, len(name)))
    assert matches(query(PatientName=name[:cut] + "*"), r)
    position = data.draw(st.integers(0, len(name) - 1))
    if name[position] != "^":
        assert matches(query(PatientName=name[:position] + "?" + name[position + 1 :]), r)


@settings(max_examples=150, deadline=None)
@given(times=st.lists(st.integers(0, 23 * 60 + 59), min_size=3, max_size=3))
def test_time_range_agrees_with_integer_comparison(times: list[int]) -> None:
    low, high, value = [*sorted(times[:2]), times[2]]
    as_tm = [f"{t // 60:02d}{t % 60:02d}" for t in (low, high, value)]
    r = record(0, time=as_tm[2] + "00")
    expected = low <= value <= high
    assert (
        matches(query({"ScheduledProcedureStepStartTime": f"{as_tm[0]}-{as_tm[1]}"}), r) is expected
    )


@settings(max_examples=100, deadline=None)
@given(
    text=st.text(alphabet="ABC*?^", min_size=1, max_size=6),
    target=st.text(alphabet="ABC^", min_size=1, max_size=6),
)
def test_wildcard_matching_agrees_with_fnmatch_semantics(text: str, target: str) -> None:
    r = record(0, patient_name=target)
    # Trailing component delimiters of a PN are insignificant (PS3.5 6.2), in the query
    # as in the value: "?^" asks for a one-letter family name and nothing else.
    pattern = text.rstrip("^")
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    expected = re.fullmatch(regex, target.rstrip("^"), re.DOTALL) is not None
    if text.rstrip("^") in ("", "*"):
        expected = True
    elif not any(c in text for c in "*?"):
        expected = text.rstrip("^") == target.rstrip("^")
    assert matches(query(PatientName=text), r) is expected


# --- modality quirks (issue #18) -------------------------------------------------------------
def _top(**keys: str) -> Dataset:
    q = Dataset()
    q.AccessionNumber = ""
    for k, v in keys.items():
        setattr(q, k, v)
    return q


@pytest.mark.parametrize("with_sequence", [False, True], ids=["no-sps-key", "empty-sps-item"])
def test_sps_keys_at_the_top_level_match_as_if_in_the_sequence(with_sequence: bool) -> None:
    r = record(0, time="093000")
    day = r.items[0x00400100][0].values[0x00400002][1][0]

    def q(**keys: str) -> Dataset:
        ds = _top(**keys)
        if with_sequence:
            ds.ScheduledProcedureStepSequence = [Dataset()]
        return ds

    assert matches(q(Modality="MG"), r)
    assert not matches(q(Modality="CT"), r)
    assert matches(q(ScheduledStationAETitle="MGTRAILER1"), r)
    assert not matches(q(ScheduledStationAETitle="OTHER"), r)
    assert matches(q(ScheduledProcedureStepStartDate=day), r)
    assert not matches(q(ScheduledProcedureStepStartDate="20000101"), r)
    assert matches(
        q(ScheduledProcedureStepStartDate=day, ScheduledProcedureStepStartTime="0900-1000"),
        r,
        combined_datetime=True,
    )
    assert not matches(
        q(ScheduledProcedureStepStartDate=day, ScheduledProcedureStepStartTime="1000-1100"),
        r,
        combined_datetime=True,
    )
    # Answered where the modality asked, with the matching item's value.
    answer = compile_query(q(Modality="", ScheduledStationAETitle="MG*")).response(r)
    assert (answer.Modality, answer.ScheduledStationAETitle) == ("MG", "MGTRAILER1")
    assert ("ScheduledProcedureStepSequence" in answer) is with_sequence
    if with_sequence:  # the item holds what was asked in it (nothing), not the hoisted keys
        assert "Modality" not in answer.ScheduledProcedureStepSequence[0]
    whole = _top(Modality="MG")
    whole.ScheduledProcedureStepSequence = []  # zero items: every item returned whole
    answer = compile_query(whole).response(r)
    assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == "SPS00000"


def test_a_key_in_the_sequence_wins_over_the_same_key_at_the_top() -> None:
    q = _top(Modality="CT")
    item = Dataset()
    item.Modality = "MG"
    q.ScheduledProcedureStepSequence = [item]
    assert matches(q, record(0))


def test_unknown_keys_are_ignored_never_zero_matches() -> None:
    r = record(0)
    q = _top(PatientAge="045Y", MedicalAlerts="none")  # keys the worklist does not hold
    q.add_new(0x00091010, "LO", "private")
    q.OtherPatientIDsSequence = [Dataset()]
    assert matches(q, r)
    answer = compile_query(q).response(r)
    assert answer.PatientAge in ("", None)


def test_person_names_match_in_nfc_and_casefold_as_documented() -> None:
    import unicodedata

    r = record(0, patient_name="Llewelyn^Siân")
    decomposed = unicodedata.normalize("NFD", "LLEWELYN^SIÂN")
    assert matches(query(PatientName=decomposed), r)
    assert matches(query(PatientName="llewelyn^si*"), r)
    assert not matches(query(PatientName="llewelyn^siân"), r, pn_case_sensitive=True)
    assert matches(query(PatientName="Llewelyn^Si?n"), r, pn_case_sensitive=True)
