"""values.schema.json rejects bad values: helm template fails, naming the value."""

from __future__ import annotations

import pytest
from chartkit import CHARTS, KUBE_VERSIONS, run_helm

BAD = [
    ("trailer", ["--set", "gateway.dicomPort=70000"], "dicomPort"),
    ("trailer", ["--set", "image.tag=latest"], "tag"),
    ("trailer", ["--set", "kafka.image.tag=latest"], "tag"),
    ("trailer", ["--set", "lan.mode=NodePort"], "mode"),
    ("trailer", ["--set", "gateway.aeTitle=THIS_AE_TITLE_IS_TOO_LONG"], "aeTitle"),
    ("trailer", ["--set", "trailerId=Trailer 42"], "trailerId"),
    ("trailer", ["--set", "gateway.dicomPrt=104"], "dicomPrt"),
    ("trailer", ["--set", "secrets.spoolKey.value=c2VjcmV0"], "value"),
    ("trailer", ["--set", "gateway.resources.limits=null"], "limits"),
    ("trailer", ["--set", "lan.modalityCidrs={10.20.0.0}"], "modalityCidrs"),
    ("trailer", ["--set", "worklist.upstream.kind=dicom_mwl"], "host"),
    ("trailer", ["--set", "worklist.statusRoute=fax"], "statusRoute"),
    ("trailer", ["--set", "codec.pixelCodec=jpeg"], "pixelCodec"),
    ("central", ["--set", "kafka.mode=zookeeper"], "mode"),
    ("central", ["--set", "kafka.mode=external"], "bootstrapServers"),
    ("central", ["--set", "ingest.tlsTermination=none"], "tlsTermination"),
    ("central", ["--set", "ingest.image.digest=sha256:abc"], "digest"),
    ("central", ["--set", "trailers={TRAILER_1}"], "trailers"),
    ("central", ["--set", "secrets.database.dsn=postgresql://u:p@db/x"], "dsn"),
]


@pytest.mark.parametrize(("chart", "args", "names"), BAD, ids=[f"{c}:{a[1]}" for c, a, _ in BAD])
def test_schema_rejects_a_bad_value(helm: str, chart: str, args: list[str], names: str) -> None:
    result = run_helm(
        helm,
        "template",
        "trailerlink",
        str(CHARTS / chart),
        "--kube-version",
        KUBE_VERSIONS[-1],
        *args,
    )
    assert result.returncode != 0, f"{args} was accepted"
    assert names in result.stderr, result.stderr


@pytest.mark.parametrize("chart", ["trailer", "central"])
def test_schema_accepts_the_defaults(helm: str, chart: str) -> None:
    result = run_helm(
        helm, "template", "trailerlink", str(CHARTS / chart), "--kube-version", KUBE_VERSIONS[-1]
    )
    assert result.returncode == 0, result.stderr
