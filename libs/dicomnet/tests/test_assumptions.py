"""One test per assumption trailerlink_dicomnet makes of pynetdicom's internals: if a
pynetdicom upgrade breaks one, this module says which, before any image is stored."""

from __future__ import annotations

import inspect

import pynetdicom
import pynetdicom.dimse_messages as dimse_messages
import pytest
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import DT_2
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import RequestHandler
from trailerlink_dicomnet import (
    PynetdicomMismatch,
    assumptions,
    check_pynetdicom,
    route_datasets,
    unroute_datasets,
)
from trailerlink_dicomnet.assumptions import ASSUMPTIONS, INSTANCE_ATTRIBUTES, Assumption
from trailerlink_dicomnet.dul import ReceivedPData


def test_the_installed_pynetdicom_is_the_pinned_one() -> None:
    assert pynetdicom.__version__ == assumptions.PYNETDICOM_VERSION
    check_pynetdicom()


@pytest.mark.parametrize(
    "assumption", ASSUMPTIONS, ids=lambda a: f"{getattr(a.owner, '__name__', a.owner)}.{a.name}"
)
def test_each_relied_on_attribute_has_the_expected_shape(assumption: Assumption) -> None:
    assert assumption.problem() is None


@pytest.mark.parametrize("path", [p for p, _ in INSTANCE_ATTRIBUTES])
def test_each_relied_on_instance_attribute_exists(path: str) -> None:
    target: object = Association(AE(), "acceptor")
    for part in path.split("."):
        target = getattr(target, part)


def test_another_version_or_shape_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(PynetdicomMismatch, match=r"3\.1\.0 installed"):
        check_pynetdicom()
    monkeypatch.undo()
    monkeypatch.delattr(DULServiceProvider, "_read_pdu_data")
    with pytest.raises(PynetdicomMismatch, match="_read_pdu_data is missing"):
        check_pynetdicom()


def test_a_changed_signature_is_a_problem() -> None:
    def renamed(self: object, data: bytes) -> None: ...

    class Owner:
        method = renamed

    assert Assumption(Owner, "method", ("self", "bytestream"), "").problem() is not None


def test_the_dul_reads_through_read_pdu_data_only_when_its_socket_is_ready() -> None:
    source = inspect.getsource(DULServiceProvider._is_transport_event)
    assert source.count("self._read_pdu_data()") == 2
    assert "self.socket.ready" in source


def test_the_reactor_sleeps_run_loop_delay_when_idle() -> None:
    assert "time.sleep(self._run_loop_delay)" in inspect.getsource(DULServiceProvider.run_reactor)


def test_dt_2_turns_the_received_pdu_into_its_primitive_for_dimse() -> None:
    source = inspect.getsource(DT_2)
    assert "dul._recv_pdu.get(False)" in source
    assert "pdu.to_primitive()" in source


def test_a_received_p_data_gives_the_primitive_pynetdicom_would() -> None:
    primitive = ReceivedPData([(1, b"\x03abc"), (3, b"\x00de")]).to_primitive()
    assert isinstance(primitive, P_DATA)
    assert primitive.presentation_data_value_list == [(1, b"\x03abc"), (3, b"\x00de")]


def test_the_request_handler_builds_then_starts_the_association() -> None:
    source = inspect.getsource(RequestHandler.handle)
    assert "self._create_association()" in source
    assert "evt.EVT_CONN_OPEN" in source
    assert "assoc.start()" in source


def test_association_timeouts_live_on_the_dul_timers() -> None:
    """Why the bounded association re-applies them after replacing its DUL."""
    assert "self.dul.artim_timer.timeout" in inspect.getsource(Association)
    assert "self.dul._idle_timer.timeout" in inspect.getsource(Association)


def test_chunked_receive_opens_its_file_through_the_module_attribute() -> None:
    source = inspect.getsource(DIMSEMessage.decode_msg)
    assert "NamedTemporaryFile(" in source
    assert "_config.STORE_RECV_CHUNKED_DATASET" in source
    assert 'self._data_set_file.write(b"\\x00" * 128)' in source
    assert 'self._data_set_file.write(b"DICM")' in source
    assert "self._data_set_file.write(data[1:])" in source


def test_routing_datasets_is_undone_when_the_last_ae_leaves() -> None:
    original = (dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET)
    first, second = AE(), AE()
    route_datasets(first, lambda assoc, incoming: None)
    route_datasets(second, lambda assoc, incoming: None)
    assert dimse_messages.NamedTemporaryFile is not original[0]
    assert _config.STORE_RECV_CHUNKED_DATASET is True
    unroute_datasets(first)
    assert dimse_messages.NamedTemporaryFile is not original[0]
    unroute_datasets(second)
    assert (dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET) == original


def test_other_aes_still_get_a_real_temporary_file() -> None:
    routed = AE()
    route_datasets(routed, lambda assoc, incoming: None)
    try:
        with dimse_messages.NamedTemporaryFile(delete=True) as handle:
            handle.write(b"x")  # no association on this thread: the real file
    finally:
        unroute_datasets(routed)


def test_encoding_reuse_is_undone_when_the_last_owner_leaves() -> None:
    import pynetdicom.service_class as service_class
    from pydicom.dataset import Dataset
    from trailerlink_dicomnet import encoding

    original = service_class.encode
    owner = object()
    encoding.enable_reuse(owner)
    try:
        ds = Dataset()
        ds.PatientID = "TEST0001"
        encoding.keep_encodings(ds)
        first = service_class.encode(ds, True, True)
        before = encoding.REUSED[0]
        assert service_class.encode(ds, True, True) == first
        assert encoding.REUSED[0] == before + 1
    finally:
        encoding.disable_reuse(owner)
    assert service_class.encode is original


def test_a_c_store_request_carries_the_file_its_data_set_went_to() -> None:
    source = inspect.getsource(DIMSEMessage.message_to_primitive)
    assert "primitive._dataset_file = self._data_set_file" in source


def test_the_command_set_is_decoded_before_the_data_set_file_is_opened() -> None:
    """What IncomingDataset is read from: by the time decode_msg opens the file, the
    command set and the context id are set on the message the DIMSE provider holds."""
    source = inspect.getsource(DIMSEMessage.decode_msg)
    assert source.index("self.command_set = decode(") < source.index("NamedTemporaryFile(")
    assert source.index("self.context_id = context_id") < source.index("NamedTemporaryFile(")
    receive = inspect.getsource(DIMSEServiceProvider.receive_primitive)
    assert "self.message = DIMSEMessage()" in receive
    assert "self.message.decode_msg(primitive, self.assoc)" in receive
