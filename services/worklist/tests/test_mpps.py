"""MPPS: a pynetdicom SCU as the modality drives N-CREATE/N-SET/N-GET; illegal transitions
are refused with the right status; accepted ones update the step and reach Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep
from trailerlink_events import messages as m
from trailerlink_events import topics
from trailerlink_testing.kafka_reader import read_events
from trailerlink_worklist import statuses
from trailerlink_worklist.app import WorklistApp
from trailerlink_worklist.model import Source, StepStatus

from .conftest import booking, today, ymd

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _uid() -> str:
    return str(generate_uid(prefix="1.2.826.0.1.3680043.8.498."))


def create_attrs(step_index: int) -> Dataset:
    step = booking(step_index)
    ds = Dataset()
    ref = Dataset()
    ref.StudyInstanceUID = step.study_instance_uid
    ref.AccessionNumber = step.accession_number
    ref.ScheduledProcedureStepID = step.scheduled_procedure_step_id
    ref.RequestedProcedureID = step.requested_procedure_id
    ds.ScheduledStepAttributesSequence = [ref]
    ds.PatientName = step.patient_name
    ds.PatientID = step.patient_id
    ds.PerformedStationAETitle = "MGTRAILER1"
    ds.PerformedProcedureStepStartDate = ymd(today())
    ds.PerformedProcedureStepStartTime = "093000"
    ds.PerformedProcedureStepID = f"PPS{step_index}"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "MG"
    ds.PerformedSeriesSequence = []
    return ds


def completion(status: str = "COMPLETED", images: int = 4) -> tuple[Dataset, list[str]]:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = ymd(today())
    ds.PerformedProcedureStepEndTime = "094500"
    series = Dataset()
    series.SeriesInstanceUID = _uid()
    series.RetrieveAETitle = ""
    series.SeriesDescription = "Screening"
    uids = [_uid() for _ in range(images)]
    refs = []
    for uid in uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = MG
        ref.ReferencedSOPInstanceUID = uid
        refs.append(ref)
    series.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [series]
    if status == "DISCONTINUED":
        code = Dataset()
        code.CodeValue = "110514"
        code.CodingSchemeDesignator = "DCM"
        code.CodeMeaning = "Incorrect worklist entry selected"
        ds.PerformedProcedureStepDiscontinuationReasonCodeSequence = [code]
    return ds, uids


@pytest.fixture
def mpps_app(scp_app: WorklistApp) -> WorklistApp:
    first, last = scp_app.worklist.window()
    scp_app.worklist.replace_window([booking(i) for i in range(4)], Source.DICOM_MWL, first, last)
    return scp_app


@pytest.fixture
def assoc(mpps_app: WorklistApp) -> Iterator[Association]:
    ae = AE(ae_title="MGTRAILER1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    association = ae.associate("127.0.0.1", mpps_app.scp.port, ae_title="TRAILERLINK_MWL")
    assert association.is_established
    yield association
    association.release()


def _status(result: tuple[Dataset | None, Dataset | None]) -> int:
    status, _ = result
    assert status is not None and "Status" in status
    return int(status.Status)


def test_create_then_complete_updates_the_step(mpps_app: WorklistApp, assoc: Association) -> None:
    uid = _uid()
    assert (
        _status(assoc.send_n_create(create_attrs(0), ModalityPerformedProcedureStep, uid))
        == statuses.SUCCESS
    )
    key = booking(0).key
    assert mpps_app.cache.get_step(key).status == StepStatus.IN_PROGRESS
    mods, images = completion()
    assert _status(assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)) == statuses.SUCCESS
    assert mpps_app.cache.get_step(key).status == StepStatus.COMPLETED
    record = mpps_app.mpps.get(uid)
    series = record.attrs.PerformedSeriesSequence[0]
    assert [r.ReferencedSOPInstanceUID for r in series.ReferencedImageSequence] == images


def test_no_n_set_after_completed(assoc: Association) -> None:
    uid = _uid()
    assoc.send_n_create(create_attrs(1), ModalityPerformedProcedureStep, uid)
    mods, _ = completion()
    assert _status(assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)) == statuses.SUCCESS
    again, _ = completion()
    status, _ = assoc.send_n_set(again, ModalityPerformedProcedureStep, uid)
    assert int(status.Status) == statuses.PROCESSING_FAILURE
    assert status.ErrorID == statuses.ERROR_ID_MAY_NO_LONGER_BE_UPDATED


def test_no_n_set_after_discontinued(mpps_app: WorklistApp, assoc: Association) -> None:
    uid = _uid()
    assoc.send_n_create(create_attrs(2), ModalityPerformedProcedureStep, uid)
    mods, _ = completion("DISCONTINUED", images=1)
    assert _status(assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)) == statuses.SUCCESS
    assert mpps_app.cache.get_step(booking(2).key).status == StepStatus.DISCONTINUED
    back = Dataset()
    back.PerformedProcedureStepStatus = "IN PROGRESS"
    assert (
        _status(assoc.send_n_set(back, ModalityPerformedProcedureStep, uid))
        == statuses.PROCESSING_FAILURE
    )


def test_create_must_be_in_progress(assoc: Association) -> None:
    ds = create_attrs(3)
    ds.PerformedProcedureStepStatus = "COMPLETED"
    assert (
        _status(assoc.send_n_create(ds, ModalityPerformedProcedureStep, _uid()))
        == statuses.INVALID_ATTRIBUTE_VALUE
    )


def test_duplicate_create_is_refused(assoc: Association) -> None:
    uid = _uid()
    assert (
        _status(assoc.send_n_create(create_attrs(3), ModalityPerformedProcedureStep, uid))
        == statuses.SUCCESS
    )
    assert (
        _status(assoc.send_n_create(create_attrs(3), ModalityPerformedProcedureStep, uid))
        == statuses.DUPLICATE_SOP_INSTANCE
    )


def test_n_set_of_unknown_instance(assoc: Association) -> None:
    mods, _ = completion()
    assert (
        _status(assoc.send_n_set(mods, ModalityPerformedProcedureStep, _uid()))
        == statuses.NO_SUCH_OBJECT_INSTANCE
    )


def test_invalid_status_value_and_completion_without_end_time(assoc: Association) -> None:
    uid = _uid()
    assoc.send_n_create(create_attrs(0), ModalityPerformedProcedureStep, uid)
    bad = Dataset()
    bad.PerformedProcedureStepStatus = "FINISHED"
    assert (
        _status(assoc.send_n_set(bad, ModalityPerformedProcedureStep, uid))
        == statuses.INVALID_ATTRIBUTE_VALUE
    )
    no_end = Dataset()
    no_end.PerformedProcedureStepStatus = "COMPLETED"
    assert (
        _status(assoc.send_n_set(no_end, ModalityPerformedProcedureStep, uid))
        == statuses.MISSING_ATTRIBUTE_VALUE
    )


def test_create_without_instance_uid_is_assigned_one(
    assoc: Association, mpps_app: WorklistApp
) -> None:
    status, _reply = assoc.send_n_create(create_attrs(1), ModalityPerformedProcedureStep)
    assert int(status.Status) == statuses.SUCCESS
    assert int(mpps_app.cache._query("SELECT COUNT(*) FROM mpps")[0][0]) == 1


def test_unscheduled_step_is_accepted(assoc: Association) -> None:
    ds = create_attrs(0)
    ref = ds.ScheduledStepAttributesSequence[0]
    ref.AccessionNumber = ""
    ref.ScheduledProcedureStepID = ""
    ref.StudyInstanceUID = _uid()
    assert (
        _status(assoc.send_n_create(ds, ModalityPerformedProcedureStep, _uid())) == statuses.SUCCESS
    )


def test_n_get_returns_the_requested_attributes(assoc: Association) -> None:
    uid = _uid()
    assoc.send_n_create(create_attrs(0), ModalityPerformedProcedureStep, uid)
    status, attrs = assoc.send_n_get(
        [0x00400252, 0x00400340, 0x00400254], ModalityPerformedProcedureStep, uid
    )
    assert int(status.Status) == statuses.SUCCESS
    assert attrs.PerformedProcedureStepStatus == "IN PROGRESS"
    assert attrs.PerformedSeriesSequence == []
    assert attrs.PerformedProcedureStepDescription in (None, "")  # requested, never set
    assert "PatientID" not in attrs  # only what was asked for
    mods, images = completion()
    assoc.send_n_set(mods, ModalityPerformedProcedureStep, uid)
    status, attrs = assoc.send_n_get([0x00400252, 0x00400340], ModalityPerformedProcedureStep, uid)
    assert int(status.Status) == statuses.SUCCESS
    assert attrs.PerformedProcedureStepStatus == "COMPLETED"
    refs = attrs.PerformedSeriesSequence[0].ReferencedImageSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == images


def test_n_get_with_no_list_returns_every_attribute(assoc: Association) -> None:
    uid = _uid()
    sent = create_attrs(1)
    assoc.send_n_create(sent, ModalityPerformedProcedureStep, uid)
    status, attrs = assoc.send_n_get([], ModalityPerformedProcedureStep, uid)
    assert int(status.Status) == statuses.SUCCESS
    assert {e.tag for e in attrs} == {e.tag for e in sent}
    assert attrs.PerformedProcedureStepID == "PPS1"
    ref = attrs.ScheduledStepAttributesSequence[0]
    assert ref.AccessionNumber == booking(1).accession_number


def test_n_get_of_unknown_instance(assoc: Association) -> None:
    status, attrs = assoc.send_n_get([0x00400252], ModalityPerformedProcedureStep, _uid())
    assert int(status.Status) == statuses.NO_SUCH_OBJECT_INSTANCE
    assert attrs is None


def test_n_get_of_command_attributes_is_an_attribute_list_error(assoc: Association) -> None:
    uid = _uid()
    assoc.send_n_create(create_attrs(2), ModalityPerformedProcedureStep, uid)
    status, attrs = assoc.send_n_get([0x00000900, 0x00400252], ModalityPerformedProcedureStep, uid)
    assert int(status.Status) == statuses.ATTRIBUTE_LIST_ERROR
    assert not attrs


@pytest.mark.kafka
async def test_procedure_step_events_reach_kafka_with_the_images(
    make_app, kafka_bootstrap: str
) -> None:  # type: ignore[no-untyped-def]
    app: WorklistApp = make_app(kafka_bootstrap_servers=kafka_bootstrap)
    first, last = app.worklist.window()
    app.worklist.replace_window([booking(0)], Source.DICOM_MWL, first, last)
    uid = _uid()
    app.mpps.create(uid, create_attrs(0))
    mods, images = completion()
    app.mpps.update(uid, mods)
    stop = asyncio.Event()
    assert await app.producer.connect(stop)
    task = asyncio.create_task(app.publisher.run(stop))
    try:
        found = await read_events(
            kafka_bootstrap,
            topics.PROCEDURE_STEP,
            until=lambda seen: len(seen) >= 2,
            match=lambda d: d.event.mpps_sop_instance_uid == uid,
            timeout=30,
        )
    finally:
        stop.set()
        await task
        await app.producer.stop()
    statuses_seen = [d.event.status for d in found]
    assert statuses_seen == [
        m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_IN_PROGRESS,
        m.ProcedureStepStatus.PROCEDURE_STEP_STATUS_COMPLETED,
    ]
    final = found[1].event
    assert [i.sop_instance_uid for i in final.performed_instances] == images
    assert final.accession_number == "ACC00000"
    assert found[1].key == booking(0).study_instance_uid
    assert app.cache.outbox_size() == 0
