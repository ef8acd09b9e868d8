"""The monitor's synthetic canary goes to the PACS test destination (PACS_CANARY_AE_TITLE),
everything else to the PACS's own AE title: real C-STOREs into Orthanc, which records the
AE title each instance was sent to."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from trailerlink_ingest.pacs import CANARY_PATIENT_ID_PREFIX, PacsTarget, store
from trailerlink_testing.dicom import write_synthetic
from trailerlink_testing.orthanc import Orthanc


def _object(path: Path, patient_id: str | None = None) -> tuple[Path, str, str, str]:
    made = write_synthetic(path, rows=64, columns=64)
    if patient_id is not None:
        ds = dcmread(made.path)
        ds.PatientID = patient_id
        ds.save_as(made.path, enforce_file_format=True)
    ds = dcmread(made.path, stop_before_pixels=True)
    return (
        made.path,
        str(ds.SOPClassUID),
        str(ds.file_meta.TransferSyntaxUID),
        made.sop_instance_uid,
    )


def _called_aet(pacs: Orthanc, sop_uid: str) -> str:
    found = pacs.find_instance(sop_uid)
    assert found is not None, "not stored"
    return pacs.get(f"/instances/{found}/metadata/CalledAET").decode()


def test_canary_objects_go_to_the_test_destination_and_others_do_not(tmp_path: Path) -> None:
    # A PACS that takes any called AE title, as a PACS with a test destination does.
    with Orthanc(tmp_path / "pacs", extra_config={"DicomCheckCalledAet": False}) as pacs:
        routed = PacsTarget(
            "127.0.0.1", pacs.dicom_port, "PACS", timeout_seconds=20, canary_ae_title="PACSTEST"
        )
        canary = _object(tmp_path / "canary.dcm", CANARY_PATIENT_ID_PREFIX + "trailer-01")
        normal = _object(tmp_path / "normal.dcm")
        near_miss = _object(tmp_path / "near.dcm", "TLCANARY")  # no dash: not the canary
        for path, sop_class, ts, _ in (canary, normal, near_miss):
            store(path, sop_class, ts, routed)
        assert _called_aet(pacs, canary[3]) == "PACSTEST"
        assert _called_aet(pacs, normal[3]) == "PACS"
        assert _called_aet(pacs, near_miss[3]) == "PACS"

        # Not configured: the canary goes to the PACS's own AE title like any object.
        plain = PacsTarget("127.0.0.1", pacs.dicom_port, "PACS", timeout_seconds=20)
        again = _object(tmp_path / "canary2.dcm", CANARY_PATIENT_ID_PREFIX + "trailer-02")
        store(again[0], again[1], again[2], plain)
        assert _called_aet(pacs, again[3]) == "PACS"
