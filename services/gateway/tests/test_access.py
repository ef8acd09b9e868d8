"""Who may associate: calling AE titles and source networks."""

from __future__ import annotations

import pytest
from trailerlink_gateway.access import PeerPolicy, parse_commitment_peers
from trailerlink_gateway.statuses import Reject


def test_policy_by_ae_title_and_network() -> None:
    policy = PeerPolicy.from_text("TRAILERLINK", "MG1@10.20.0.0/24, MG2, QA@::1")
    assert policy.check("MG1", "TRAILERLINK", "10.20.0.9") is None
    assert policy.check("MG1", "TRAILERLINK", "10.20.1.9") is Reject.ADDRESS_NOT_PERMITTED
    assert policy.check("MG1", "TRAILERLINK", "::ffff:10.20.0.9") is None
    assert policy.check("MG2", "TRAILERLINK", "192.0.2.1") is None
    assert policy.check("QA", "TRAILERLINK", "::1") is None
    assert policy.check("NOPE", "TRAILERLINK", "10.20.0.9") is Reject.CALLING_AE_NOT_RECOGNISED
    assert policy.check("MG1", "OTHER", "10.20.0.9") is Reject.CALLED_AE_NOT_RECOGNISED


def test_empty_policy_refuses_everyone_and_star_allows_any_title() -> None:
    assert PeerPolicy.from_text("T", "").check("MG1", "T", "127.0.0.1") is not None
    assert PeerPolicy.from_text("T", "*@127.0.0.0/8").check("ANY", "T", "127.0.0.1") is None


def test_called_title_check_can_be_turned_off() -> None:
    policy = PeerPolicy.from_text("T", "MG1", require_called=False)
    assert policy.check("MG1", "ANYTHING", "127.0.0.1") is None


@pytest.mark.parametrize("bad", ["MG1@not-a-net", "@10.0.0.0/8", "X" * 17])
def test_bad_peer_entries_are_config_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        PeerPolicy.from_text("T", bad)


def test_commitment_peers() -> None:
    assert parse_commitment_peers("MG1=10.0.0.5:104, MG2=[::1]:11112") == {
        "MG1": ("10.0.0.5", 104),
        "MG2": ("::1", 11112),
    }
    with pytest.raises(ValueError):
        parse_commitment_peers("MG1=host")
