"""A single-machine Kubernetes for the chart tests: a real API server, simulated nodes.

    with Cluster(tmp / "cluster") as cluster:       # or: make cluster / make cluster-stop
        env = {"KUBECONFIG": str(cluster.kubeconfig)}
        subprocess.run(["helm", "install", "--wait", ...], env=env)

What is real: etcd, kube-apiserver (admission, Pod Security, RBAC, CRD validation),
kube-controller-manager (Deployments, StatefulSets, Jobs, garbage collection, PV
binding) and kube-scheduler, all built from the Go module proxy by
``scripts/cluster-tools.sh`` and cached per version. What is simulated: the nodes and
their pods (kwok: a pod is scheduled and marked Running and Ready, a Job's pod
Succeeded, but no process runs), a volume provisioner for the default StorageClass and a
load-balancer address allocator — the two cloud controllers a real cluster gets from
its provider, both in :func:`serve_cloud` here.

Every address is in 198.18.0.0/15 (services, pods, nodes, load balancers); the API
server listens on 127.0.0.1 only. Nothing on the host is changed (no iptables, no
bridge, no mount): kwok nodes run no kubelet.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess
from trailerlink_testing.waiting import GiveUp, wait_until

ROOT = Path(__file__).resolve().parents[4]
KUBERNETES_VERSION = "v1.34.4"
SERVICE_CIDR = "198.18.128.0/20"
POD_CIDR = "198.18.64.0/18"
NODE_IP = "198.18.0.10"
LOAD_BALANCER_POOL = "198.18.200."  # .1 – .254
STORAGE_CLASS = "trailerlink-local"
# Also served by the simulated provisioner: K3s's own class, which trailer values name.
EXTRA_STORAGE_CLASSES = ("local-path",)
PROVISIONER = "trailerlink.local/simulated"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
# kwok stages: a node becomes Ready and keeps its lease; a pod becomes Running and Ready;
# a Job's pod Succeeds; a deleted pod goes away.
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


class ClusterUnavailable(GiveUp, RuntimeError):
    """The binaries could not be built or the control plane (or a node's process) did
    not come up; a wait on the cluster ends at once with it."""


@dataclass(frozen=True)
class Tools:
    kubernetes_bin: Path
    etcd_bin: Path
    kwok_bin: Path
    kwok_stage: Path
    prometheus_operator_crds: Path
    coredns_bin: Path | None  # built for a real node only


def build_tools(real_node: bool = False) -> Tools:
    """Build (first time) or find the cached binaries; see scripts/cluster-tools.sh.
    ``real_node`` adds the kubelet, kube-proxy (in ``kubernetes_bin``) and CoreDNS."""
    env = {**os.environ, "KUBERNETES_VERSION": KUBERNETES_VERSION}
    if real_node:
        env["TRAILERLINK_CLUSTER_NODE"] = "real"
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster-tools.sh")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise ClusterUnavailable(f"scripts/cluster-tools.sh failed:\n{done.stderr[-3000:]}")
    paths = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    return Tools(
        Path(paths["KUBERNETES_BIN"]),
        Path(paths["ETCD_BIN"]),
        Path(paths["KWOK_BIN"]),
        Path(paths["KWOK_STAGE"]),
        Path(paths["CRDS_PROMETHEUS_OPERATOR"]),
        Path(paths["COREDNS_BIN"]) if "COREDNS_BIN" in paths else None,
    )


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(pki: Path) -> None:
    """A cluster CA, the API server's serving certificate, a system:masters client
    certificate and the service-account signing key, made with openssl."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "admin.crt").exists():
        return
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "30",
        "-subj",
        "/CN=trailerlink-test-ca",
        cwd=pki,
    )
    service_ip = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
    (pki / "apiserver.ext").write_text(
        "subjectAltName=IP:127.0.0.1,IP:" + service_ip + ",DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        "extendedKeyUsage=serverAuth\n"
    )
    (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject, ext in (
        ("apiserver", "/CN=kube-apiserver", "apiserver.ext"),
        ("admin", "/O=system:masters/CN=trailerlink-admin", "client.ext"),
    ):
        _openssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            subject,
            cwd=pki,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            ext,
            "-out",
            f"{name}.crt",
            cwd=pki,
        )
    _openssl(
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "sa.key",
        cwd=pki,
    )
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def write_kubeconfig(path: Path, pki: Path, server: str) -> None:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "trailerlink-test",
        "clusters": [
            {
                "name": "trailerlink-test",
                "cluster": {"server": server, "certificate-authority-data": b64("ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate-data": b64("admin.crt"),
                    "client-key-data": b64("admin.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "trailerlink-test",
                "context": {"cluster": "trailerlink-test", "user": "admin"},
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    path.chmod(0o600)


class Cluster:
    """etcd, kube-apiserver, controller-manager, scheduler, kwok and the simulated cloud
    controllers as subprocesses under ``directory``; one kwok node, a default
    StorageClass."""

    def __init__(self, directory: Path, nodes: int = 1) -> None:
        self.directory = directory.resolve()
        self.nodes = nodes
        self.pki = self.directory / "pki"
        self.kubeconfig = self.directory / "kubeconfig"
        self.apiserver_port = 0
        self._procs: list[ServiceProcess] = []

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    def env(self) -> dict[str, str]:
        """Environment for helm/kubectl against this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def client(self) -> httpx.Client:
        return api_client(self.pki, self.server)

    # --- start / stop --------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> Cluster:
        tools = build_tools()
        self.directory.mkdir(parents=True, exist_ok=True)
        logs = self.directory / "logs"
        logs.mkdir(exist_ok=True)
        make_certificates(self.pki)
        etcd_port, etcd_peer = free_port(), free_port()
        self.apiserver_port = free_port()
        write_kubeconfig(self.kubeconfig, self.pki, self.server)
        k8s = tools.kubernetes_bin
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                str(tools.etcd_bin / "etcd"),
                "--name",
                "default",
                "--data-dir",
                str(self.directory / "etcd"),
                "--listen-client-urls",
                etcd_url,
                "--advertise-client-urls",
                etcd_url,
                "--listen-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",  # a test cluster: speed over surviving a power cut
                "--log-level",
                "warn",
            ],
            logs,
        )
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(k8s / "kube-apiserver"),
                "--etcd-servers",
                etcd_url,
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
                "--secure-port",
                str(self.apiserver_port),
                "--endpoint-reconciler-type",
                "none",  # 127.0.0.1 is not a valid endpoint
                "--service-cluster-ip-range",
                SERVICE_CIDR,
                "--client-ca-file",
                str(pki / "ca.crt"),
                "--tls-cert-file",
                str(pki / "apiserver.crt"),
                "--tls-private-key-file",
                str(pki / "apiserver.key"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file",
                str(pki / "sa.pub"),
                "--service-account-signing-key-file",
                str(pki / "sa.key"),
                "--authorization-mode",
                "Node,RBAC",
                "--allow-privileged=false",
                "--profiling=false",
            ],
            logs,
        )
        client = self.client()
        try:
            wait_until(lambda: _ok(client, "/readyz"), timeout=timeout, what="kube-apiserver ready")
        except Exception as exc:
            self.stop()
            raise ClusterUnavailable(
                f"kube-apiserver did not become ready: {exc}\n{self._tail('kube-apiserver')}"
            ) from exc
        kubeconfig = str(self.kubeconfig)
        self._spawn(
            "kube-controller-manager",
            [
                str(k8s / "kube-controller-manager"),
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--leader-elect=false",
                "--use-service-account-credentials",
                "--service-account-private-key-file",
                str(pki / "sa.key"),
                "--root-ca-file",
                str(pki / "ca.crt"),
                "--controllers",
                "*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller",
            ],
            logs,
        )
        self._spawn(
            "kube-scheduler",
            [
                str(k8s / "kube-scheduler"),
                "--kubeconfig",
                kubeconfig,
                "--authentication-kubeconfig",
                kubeconfig,
                "--authorization-kubeconfig",
                kubeconfig,
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                str(free_port()),
                "--leader-elect=false",
            ],
            logs,
        )
        stages = [f"--config={tools.kwok_stage / s}" for s in KWOK_STAGES]
        self._spawn(
            "kwok",
            [
                str(tools.kwok_bin / "kwok"),
                "--kubeconfig",
                kubeconfig,
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                "--node-ip",
                NODE_IP,
                "--cidr",
                POD_CIDR,
                "--node-lease-duration-seconds=40",
                "--server-address",
                f"127.0.0.1:{free_port()}",
                *stages,
            ],
            logs,
        )
        self._spawn(
            "cloud",
            [
                sys.executable,
                "-m",
                "trailerlink_testing.cluster",
                "cloud",
                "--dir",
                str(self.directory),
            ],
            logs,
        )
        try:
            self._bootstrap_objects(client)
            wait_until(lambda: self._nodes_ready(client), timeout=timeout, what="kwok nodes Ready")
            wait_until(
                lambda: _ok(client, "/api/v1/namespaces/default/serviceaccounts/default"),
                timeout=timeout,
                what="default service account",
            )
        except Exception:
            self.stop()
            raise
        (self.directory / "pids").write_text("\n".join(str(p.pid) for p in self._procs) + "\n")
        return self

    def _spawn(self, name: str, argv: list[str], logs: Path) -> None:
        proc = ServiceProcess(argv, log_path=logs / f"{name}.log").start()
        self._procs.append(proc)

    def _tail(self, name: str) -> str:
        path = self.directory / "logs" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-30:])

    def _bootstrap_objects(self, client: httpx.Client) -> None:
        storage_class = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
            "allowVolumeExpansion": True,
        }
        _apply(client, "/apis/storage.k8s.io/v1/storageclasses", storage_class)
        for name in EXTRA_STORAGE_CLASSES:
            _apply(
                client,
                "/apis/storage.k8s.io/v1/storageclasses",
                {**storage_class, "metadata": {"name": name}},
            )
        for i in range(self.nodes):
            node = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"trailer-node-{i}",
                    "annotations": {NODE_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "kubernetes.io/hostname": f"trailer-node-{i}",
                        "type": "kwok",
                    },
                },
                "spec": {},
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            }
            _apply(client, "/api/v1/nodes", node)

    def _nodes_ready(self, client: httpx.Client) -> bool:
        nodes = client.get("/api/v1/nodes").json().get("items", [])
        ready = [
            n
            for n in nodes
            for c in n.get("status", {}).get("conditions", [])
            if c["type"] == "Ready" and c["status"] == "True"
        ]
        return len(ready) >= self.nodes

    def stop(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.terminate(timeout=15)
        self._procs.clear()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- the API, without a client library ----------------------------------------------
def api_client(pki: Path, server: str) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return httpx.Client(base_url=server, verify=context, timeout=10.0)


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def create_namespace(client: httpx.Client, name: str, enforce: str) -> None:
    """A namespace with Pod Security ``enforce``d at that level and ``restricted`` warned
    and audited, as ops label theirs (docs/runbook.md)."""
    labels = {
        "pod-security.kubernetes.io/enforce": enforce,
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    metadata = {"name": name, "labels": labels}
    rsp = client.post(
        "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    )
    if rsp.status_code != 201:
        raise RuntimeError(f"creating namespace {name}: {rsp.status_code} {rsp.text[:300]}")


def _apply(client: httpx.Client, collection: str, obj: dict[str, Any]) -> None:
    rsp = client.post(collection, json=obj)
    if rsp.status_code not in (200, 201, 409):
        raise ClusterUnavailable(f"creating {obj['kind']}: {rsp.status_code} {rsp.text[:300]}")


# --- the simulated cloud: volumes for the default StorageClass, LB addresses ---------
def _provision(client: httpx.Client, volumes: Path) -> None:
    """A PersistentVolume for every pending claim of our class (bound by the real PV
    controller through claimRef); released volumes deleted with their directory."""
    claims = client.get("/api/v1/persistentvolumeclaims").json().get("items", [])
    classes = {
        c["metadata"]["name"]
        for c in client.get("/apis/storage.k8s.io/v1/storageclasses").json().get("items", [])
        if c.get("provisioner") == PROVISIONER
    }
    for claim in claims:
        spec, meta = claim["spec"], claim["metadata"]
        if spec.get("volumeName") or spec.get("storageClassName") not in classes:
            continue
        name = f"pvc-{meta['uid']}"
        path = volumes / name
        path.mkdir(parents=True, exist_ok=True)
        # World-writable like K3s's local-path volumes: a hostPath volume gets no fsGroup
        # ownership, and the pods run as non-root users.
        path.chmod(0o777)
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            },
            "spec": {
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "accessModes": spec.get("accessModes", ["ReadWriteOnce"]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": spec["storageClassName"],
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        client.post("/api/v1/persistentvolumes", json=volume)
    for volume in client.get("/api/v1/persistentvolumes").json().get("items", []):
        annotations = volume["metadata"].get("annotations", {})
        if annotations.get("pv.kubernetes.io/provisioned-by") == PROVISIONER and volume.get(
            "status", {}
        ).get("phase") in ("Released", "Failed"):
            client.delete(f"/api/v1/persistentvolumes/{volume['metadata']['name']}")


def _load_balancers(client: httpx.Client) -> None:
    """Give each LoadBalancer Service an address from the pool, as a provider would."""
    services = client.get("/api/v1/services").json().get("items", [])
    taken = {
        ing.get("ip")
        for s in services
        for ing in s.get("status", {}).get("loadBalancer", {}).get("ingress", [])
    }
    for service in services:
        if service["spec"].get("type") != "LoadBalancer":
            continue
        if service.get("status", {}).get("loadBalancer", {}).get("ingress"):
            continue
        ip = next(
            f"{LOAD_BALANCER_POOL}{i}"
            for i in range(1, 255)
            if f"{LOAD_BALANCER_POOL}{i}" not in taken
        )
        taken.add(ip)
        meta = service["metadata"]
        client.patch(
            f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}/status",
            json={"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}},
            headers={"Content-Type": "application/merge-patch+json"},
        )


def serve_cloud(directory: Path, interval: float = 0.5) -> None:
    """Run the simulated cloud controllers until SIGTERM."""
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    config = json.loads((directory / "kubeconfig").read_text())
    client = api_client(directory / "pki", config["clusters"][0]["cluster"]["server"])
    volumes = directory / "volumes"
    while not stopping:
        try:
            _provision(client, volumes)
            _load_balancers(client)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"cloud: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        time.sleep(interval)


# --- make cluster / make cluster-stop -------------------------------------------------
def _pids(directory: Path) -> Iterator[int]:
    path = directory / "pids"
    if path.exists():
        for line in path.read_text().split():
            yield int(line)


def stop_directory(directory: Path) -> None:
    """Stop a cluster `start` left running (its process groups), newest first."""
    for pid in reversed(list(_pids(directory))):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for pid in _pids(directory):
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (directory / "pids").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trailerlink_testing.cluster")
    parser.add_argument("command", choices=["start", "stop", "cloud", "build"])
    parser.add_argument("--dir", type=Path, default=ROOT / ".run" / "cluster")
    parser.add_argument(
        "--node",
        choices=["kwok", "real"],
        default="kwok",
        help="kwok: simulated nodes (pods run no process); real: containerd + kubelet here",
    )
    args = parser.parse_args(argv)
    # Imported here: realnode builds on this module.
    from trailerlink_testing import realnode

    if args.command == "build":
        print(build_tools())
    elif args.command == "cloud":
        serve_cloud(args.dir)
    elif args.command == "stop":
        realnode.stop_directory(args.dir / "node")
        stop_directory(args.dir)
        print(f"cluster in {args.dir} stopped")
    else:
        realnode.stop_directory(args.dir / "node")
        stop_directory(args.dir)
        cluster = Cluster(args.dir, nodes=0 if args.node == "real" else 1).start()
        cluster._procs.clear()  # keep running after this command returns
        print(f"cluster up: {cluster.server}")
        if args.node == "real":
            try:
                node = realnode.RealNode(cluster).start()
            except BaseException:
                stop_directory(args.dir)
                raise
            node._procs.clear()  # keep running; `make cluster-stop` stops and sweeps it
            print(f"real node {node.name} Ready at {node.ip}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")


if __name__ == "__main__":
    main()
