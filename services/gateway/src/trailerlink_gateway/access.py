"""Who may associate with the gateway: calling AE titles, optionally from set networks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from trailerlink_gateway.statuses import Reject

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ANY_AE = "*"


@dataclass(frozen=True)
class PeerRule:
    """One allowed peer: an AE title ("*" for any) and, optionally, a source network."""

    ae_title: str
    network: IPNetwork | None = None

    def matches_ae(self, ae_title: str) -> bool:
        return self.ae_title in (ANY_AE, ae_title)

    def matches_address(self, address: str) -> bool:
        if self.network is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip in self.network


def parse_peer_rules(text: str) -> list[PeerRule]:
    """Parse ``'MG1@10.20.0.0/24, MG2, *'``. Raises ``ValueError`` naming the bad entry."""
    rules = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        ae, _, net = entry.partition("@")
        ae = ae.strip()
        if not ae or len(ae) > 16:
            raise ValueError(f"bad AE title in allowed peer entry {entry!r}")
        network = None
        if net.strip():
            try:
                network = ipaddress.ip_network(net.strip(), strict=False)
            except ValueError:
                raise ValueError(f"bad network in allowed peer entry {entry!r}") from None
        rules.append(PeerRule(ae, network))
    return rules


@dataclass(frozen=True)
class PeerPolicy:
    """Decides whether an association request is accepted."""

    ae_title: str
    rules: tuple[PeerRule, ...]
    require_called_ae_title: bool = True

    @classmethod
    def from_text(cls, ae_title: str, allowed: str, require_called: bool = True) -> PeerPolicy:
        return cls(ae_title, tuple(parse_peer_rules(allowed)), require_called)

    def check(self, calling_ae: str, called_ae: str, address: str) -> Reject | None:
        """None to accept, else why the request is rejected."""
        calling_ae, called_ae = calling_ae.strip(), called_ae.strip()
        if self.require_called_ae_title and called_ae != self.ae_title:
            return Reject.CALLED_AE_NOT_RECOGNISED
        by_ae = [r for r in self.rules if r.matches_ae(calling_ae)]
        if not by_ae:
            return Reject.CALLING_AE_NOT_RECOGNISED
        if not any(r.matches_address(address) for r in by_ae):
            return Reject.ADDRESS_NOT_PERMITTED
        return None


def parse_commitment_peers(text: str) -> dict[str, tuple[str, int]]:
    """Parse ``'MG1=10.20.0.5:104, MG2=mg2.local:11112'`` into AE -> (host, port)."""
    peers: dict[str, tuple[str, int]] = {}
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        ae, sep, where = entry.partition("=")
        host, colon, port = where.strip().rpartition(":")
        if not sep or not colon or not ae.strip() or not host or not port.isdigit():
            raise ValueError(f"bad commitment peer entry {entry!r} (want AE=host:port)")
        peers[ae.strip()] = (host.strip("[]"), int(port))
    return peers
