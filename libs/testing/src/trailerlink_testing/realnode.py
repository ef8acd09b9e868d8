"""A real node for the test cluster: the trailer's pods run as real containers.

    cluster = Cluster(directory, nodes=0).start()
    with RealNode(cluster) as node:       # or: make cluster NODE=real / make cluster-stop
        ...  # helm install the trailer chart; its pods run on node.name at node.ip

What runs, as host processes under ``<cluster dir>/node``: containerd (Debian's 1.6, a
private configuration, root and socket: the host's own containerd, if any, is not
touched) with runc; the kubelet and kube-proxy (iptables mode), built from the Go
module proxy like the control plane; CoreDNS, serving the cluster's names from the API
server. Pods are wired with Debian's CNI plugins: ``bridge`` + ``host-local`` (no NAT)
and ``portmap`` for hostPort. Images come from podman (``make images``, plus the
``pause`` and ``kafka`` images no registry can give here) through an archive:
``podman save``, then ``ctr images import``.

Narrower than a K3s node, on purpose: CoreDNS runs as a host process on the node's
address (the kubelet's ``clusterDNS``) instead of a Deployment behind the kube-dns
Service; the kubelet authenticates with the cluster's admin certificate, not a
bootstrapped node certificate; NetworkPolicies are not enforced (no policy-aware CNI);
pods have no per-QoS cgroups (``cgroupsPerQOS: false`` — this host has hybrid cgroup
v1, which the kubelet accepts with ``failCgroupV1: false``).

Every address is in 198.18.0.0/15: the node on a veth of its own, pods on the CNI
bridge, services from the cluster's range. What the node changes on the host — iptables
chains (KUBE-*, CNI-*), the bridge and veths, network namespaces, mounts, cgroups and
the sysctls the kubelet and the bridge plugin set, libcni's result cache — is recorded
before (``host-before.json``) and what the record does not hold is undone by
:meth:`RealNode.stop` (also after a failed start) or :func:`stop_directory` (after a
killed one); :func:`host_changes` reports anything left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

import httpx

from trailerlink_testing.cluster import Cluster, ClusterUnavailable, build_tools
from trailerlink_testing.cluster import stop_directory as stop_processes
from trailerlink_testing.containers import build_images, image_for
from trailerlink_testing.kafka import KAFKA_VERSION
from trailerlink_testing.ports import free_port
from trailerlink_testing.procs import ServiceProcess
from trailerlink_testing.waiting import wait_until

NODE_NAME = "trailer-node-real"
NODE_IP = "198.18.0.20"
NODE_LINK = "tlnode0"
BRIDGE = "tlcni0"
POD_SUBNET = "198.18.64.0/24"
POD_GATEWAY = "198.18.64.1"
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "localhost/trailerlink/pause:1"
CNI_BIN = Path("/usr/lib/cni")
# Where containerd keeps its runtime state: short (unix socket paths are limited to 108
# bytes) and on tmpfs like any /run state.
STATE = Path("/run/trailerlink-node")
# Sysctls the kubelet (its kernel defaults), kube-proxy and the bridge plugin may set.
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
)
CHAIN_PREFIXES = ("KUBE-", "CNI-")
TABLES = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
# libcni caches each attachment's result here (the path is built into containerd).
CNI_CACHE = Path("/var/lib/cni")


def _run(*argv: str, check: bool = True, input: bytes | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, input=input, check=False)
    if check and done.returncode != 0:
        raise ClusterUnavailable(
            f"{' '.join(argv[:3])} failed ({done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-800:]}"
        )
    return done.stdout.decode(errors="replace")


def _node_tools() -> dict[str, Path]:
    """Build (once, cached per version) and locate the kubelet, kube-proxy and CoreDNS,
    at the control plane's version."""
    tools = build_tools(real_node=True)
    assert tools.coredns_bin is not None  # cluster-tools.sh builds it for a real node
    return {
        "kubelet": tools.kubernetes_bin / "kubelet",
        "kube-proxy": tools.kubernetes_bin / "kube-proxy",
        "coredns": tools.coredns_bin / "coredns",
    }


def node_images() -> list[str]:
    """What the trailer chart's pods run, as podman tags (``make images`` and
    ``scripts/images.sh pause kafka`` build them)."""
    services = ("gateway", "codec", "uplink", "worklist", "ingest", "monitor")
    return [
        *(image_for(f"trailerlink-{s}") for s in services),
        f"localhost/trailerlink/kafka:{KAFKA_VERSION}",
        PAUSE_IMAGE,
    ]


def build_node_images() -> None:
    """`make images` and the ``pause`` and ``kafka`` images (cached: about a second when
    nothing changed; the JRE base is made by mmdebstrap once)."""
    build_images()
    build_images("pause", "kafka")


# --- the host's state: recorded before, compared and restored after --------------------
def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def _sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = _sysctl_path(name).read_text().strip()
    return values


def _chains_in(dump: str) -> list[str]:
    """The KUBE-*/CNI-* chains an ``iptables-save`` dump declares."""
    return [
        line[1:].split()[0]
        for line in dump.splitlines()
        if line.startswith(":") and line[1:].startswith(CHAIN_PREFIXES)
    ]


def _our_chains() -> dict[str, list[str]]:
    """iptables/ip6tables chains named KUBE-* or CNI-*, per ``tool/table``."""
    found: dict[str, list[str]] = {}
    for tool in ("iptables", "ip6tables"):
        for table in TABLES:
            chains = _chains_in(_run(f"{tool}-save", "-t", table, check=False))
            if chains:
                found[f"{tool}/{table}"] = chains
    return found


def _cni_cache() -> set[str]:
    results = CNI_CACHE / "results"
    return {p.name for p in results.iterdir()} if results.is_dir() else set()


def _mounts_under(*roots: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
            points.append(point)
    return points


def _cgroups() -> set[str]:
    """The top-level cgroups of every v1 hierarchy (where runc puts pod containers when
    the kubelet has no per-QoS cgroups)."""
    found = set()
    if CGROUP_ROOT.is_dir():
        for hierarchy in CGROUP_ROOT.iterdir():
            with contextlib.suppress(OSError):
                found |= {f"{hierarchy.name}/{d.name}" for d in hierarchy.iterdir() if d.is_dir()}
    return found


def _netns() -> set[str]:
    return {p.name for p in NETNS_DIR.iterdir()} if NETNS_DIR.is_dir() else set()


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def host_snapshot() -> dict[str, object]:
    return {
        "chains": _our_chains(),
        "cni_cache": sorted(_cni_cache()) if CNI_CACHE.exists() else None,
        "sysctls": _sysctls(),
        "cgroups": sorted(_cgroups()),
        "netns": sorted(_netns()),
        "links": sorted(_links()),
    }


def host_changes(before: dict[str, object], directory: Path) -> list[str]:
    """What the node left on the host compared with ``before``: empty when it was left
    as found."""
    left = []
    old_chains: dict[str, list[str]] = before["chains"]  # type: ignore[assignment]
    for key, chains in _our_chains().items():
        new = [c for c in chains if c not in old_chains.get(key, [])]
        if new:
            left.append(f"{key}: chains {', '.join(new)}")
    old_cache: list[str] | None = before["cni_cache"]  # type: ignore[assignment]
    if old_cache is None and CNI_CACHE.exists():
        left.append(f"directory {CNI_CACHE}")
    for name in sorted(_cni_cache() - set(old_cache or [])):
        left.append(f"CNI result {name}")
    for point in _mounts_under(directory, STATE):
        left.append(f"mount {point}")
    for name in sorted(_links() - set(before["links"])):  # type: ignore[call-overload]
        left.append(f"network interface {name}")
    for name in sorted(_netns() - set(before["netns"])):  # type: ignore[call-overload]
        left.append(f"network namespace {name}")
    for name in sorted(_cgroups() - set(before["cgroups"])):  # type: ignore[call-overload]
        left.append(f"cgroup {name}")
    old: dict[str, str] = before["sysctls"]  # type: ignore[assignment]
    for name, value in _sysctls().items():
        if name in old and old[name] != value:
            left.append(f"sysctl {name}={value} (was {old[name]})")
    return left


def _remove_chains(before: dict[str, list[str]]) -> None:
    """Delete every rule in or jumping to a KUBE-*/CNI-* chain that was not there
    ``before``, then those chains."""
    for tool in ("iptables", "ip6tables"):
        for table in TABLES:
            dump = _run(f"{tool}-save", "-t", table, check=False)
            old = before.get(f"{tool}/{table}", [])
            chains = [c for c in _chains_in(dump) if c not in old]
            if not chains:
                continue
            script = [f"*{table}"]
            for line in dump.splitlines():
                if not line.startswith("-A "):
                    continue
                chain = line.split()[1]
                if chain in chains:
                    continue  # flushed with its chain below
                if any(f"-j {c}" in line or f"-g {c}" in line for c in chains):
                    script.append("-D" + line[2:])
            script += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains]
            script.append("COMMIT\n")
            _run(f"{tool}-restore", "--noflush", input="\n".join(script).encode(), check=False)


class RealNode:
    """containerd, the kubelet, kube-proxy and CoreDNS on this host, registered with
    ``cluster`` as node :data:`NODE_NAME`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.directory = cluster.directory / "node"
        self.name = NODE_NAME
        self.ip = NODE_IP
        self.socket = STATE / "containerd.sock"
        self._procs: list[ServiceProcess] = []
        self._kubelet: ServiceProcess | None = None
        self._before: dict[str, object] | None = None

    def __enter__(self) -> RealNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- start -----------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> RealNode:
        if os.geteuid() != 0:
            raise ClusterUnavailable("a real node needs root (containerd, the kubelet)")
        for tool in ("containerd", "ctr", "runc", "podman", "iptables-save"):
            if shutil.which(tool) is None:
                raise ClusterUnavailable(f"{tool} is missing: run 'make setup'")
        for plugin in ("bridge", "host-local", "portmap", "loopback"):
            if not (CNI_BIN / plugin).exists():
                raise ClusterUnavailable(f"CNI plugin {plugin} is missing: run 'make setup'")
        missing = [
            i
            for i in node_images()
            if subprocess.run(["podman", "image", "exists", i], check=False).returncode != 0
        ]
        if missing:
            raise ClusterUnavailable(
                f"images missing: {', '.join(missing)} (run make images; "
                "scripts/images.sh pause kafka)"
            )
        if self.socket.exists() or (Path("/sys/class/net") / BRIDGE).exists():
            raise ClusterUnavailable(
                f"a real node seems to be running already ({self.socket} or {BRIDGE} exists)"
            )
        tools = _node_tools()
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        (self.directory / "pids").unlink(missing_ok=True)
        self._before = host_snapshot()
        (self.directory / "host-before.json").write_text(json.dumps(self._before))
        try:
            self._start(tools, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, tools: dict[str, Path], timeout: float) -> None:
        # The node's address on a link of its own (a veth pair: this kernel has no dummy
        # driver); deleting one end deletes both.
        _run("ip", "link", "add", NODE_LINK, "type", "veth", "peer", "name", f"{NODE_LINK}p")
        _run("ip", "addr", "add", f"{NODE_IP}/32", "dev", NODE_LINK)
        _run("ip", "link", "set", f"{NODE_LINK}p", "up")
        _run("ip", "link", "set", NODE_LINK, "up")
        self._start_containerd()
        self._import_images()
        self._write_cni()
        self._start_coredns(tools["coredns"])
        self._start_kubelet(tools["kubelet"])
        self._start_kube_proxy(tools["kube-proxy"])
        client = self.cluster.client()
        wait_until(lambda: self._ready(client), timeout, f"node {NODE_NAME} Ready", interval=0.5)

    def _spawn(self, name: str, argv: list[str]) -> ServiceProcess:
        proc = ServiceProcess(argv, log_path=self.directory / "logs" / f"{name}.log").start()
        self._procs.append(proc)
        # Recorded at once, so `make cluster-stop` finds a node killed while starting.
        with (self.directory / "pids").open("a") as pids:
            pids.write(f"{proc.pid}\n")
        return proc

    def _start_containerd(self) -> None:
        root = self.directory / "containerd"
        cni_conf = self.directory / "cni" / "net.d"
        config = self.directory / "containerd.toml"
        config.write_text(
            f"""version = 2
root = "{root}"
state = "{STATE}/state"
# Snapshotters this host does not need (and that would probe its filesystems).
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{self.socket}"

[ttrpc]
  address = "{self.socket}.ttrpc"

[debug]
  level = "warn"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: never lower a process's OOM score adjustment
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "{STATE}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_conf}"
"""
        )
        STATE.mkdir(parents=True, exist_ok=True)
        proc = self._spawn("containerd", ["containerd", "--config", str(config)])

        def up() -> bool:
            if not proc.running():
                raise ClusterUnavailable(f"containerd exited:\n{proc.tail()}")
            return self.socket.exists()

        wait_until(up, 60, "containerd's socket", interval=0.2)

    def _ctr(self, *args: str, input: bytes | None = None) -> str:
        return _run(
            "ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args, input=input
        )

    def _import_images(self) -> None:
        archive = self.directory / "images.tar"
        images = node_images()
        try:
            _run("podman", "save", "--quiet", "--multi-image-archive", "-o", str(archive), *images)
            self._ctr("images", "import", "--no-unpack", str(archive))
        finally:
            archive.unlink(missing_ok=True)
        listed = self._ctr("images", "ls", "-q")
        absent = [i for i in images if i not in listed.split()]
        if absent:
            raise ClusterUnavailable(f"containerd did not import {', '.join(absent)}")

    def _write_cni(self) -> None:
        conf = self.directory / "cni" / "net.d"
        conf.mkdir(parents=True, exist_ok=True)
        network = {
            "cniVersion": "1.0.0",
            "name": "trailerlink",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,  # pods reach only 198.18.0.0/15 addresses
                    "hairpinMode": True,  # a pod reaching itself through its Service
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": POD_GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.directory / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (conf / "10-trailerlink.conflist").write_text(json.dumps(network, indent=2))

    def _start_coredns(self, binary: Path) -> None:
        corefile = self.directory / "Corefile"
        corefile.write_text(
            f""".:53 {{
    bind {NODE_IP}
    errors
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{
        kubeconfig {self.cluster.kubeconfig}
        pods insecure
    }}
}}
"""
        )
        self._spawn("coredns", [str(binary), "-conf", str(corefile)])

    def _start_kubelet(self, binary: Path) -> None:
        root = self.directory / "kubelet"
        resolv = self.directory / "resolv.conf"
        resolv.write_text(f"nameserver {NODE_IP}\n")
        config = self.directory / "kubelet.yaml"
        pki = self.cluster.pki
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": NODE_IP,
                    "port": free_port(),
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": free_port(),
                    "authentication": {
                        "anonymous": {"enabled": False},
                        "webhook": {"enabled": False},
                        "x509": {"clientCAFile": str(pki / "ca.crt")},
                    },
                    "authorization": {"mode": "AlwaysAllow"},
                    "containerRuntimeEndpoint": f"unix://{self.socket}",
                    "cgroupDriver": "cgroupfs",
                    "cgroupsPerQOS": False,
                    "enforceNodeAllocatable": [],
                    "failCgroupV1": False,
                    "failSwapOn": False,
                    "clusterDNS": [NODE_IP],
                    "clusterDomain": CLUSTER_DOMAIN,
                    "resolvConf": str(resolv),
                    "podLogsDir": str(self.directory / "pod-logs"),
                    # a shared test machine: never evict the trailer for the host's disk
                    "evictionHard": {
                        "memory.available": "0%",
                        "nodefs.available": "0%",
                        "nodefs.inodesFree": "0%",
                        "imagefs.available": "0%",
                    },
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                    "registerNode": True,
                    "nodeStatusReportFrequency": "10s",
                }
            )
        )
        self._kubelet = self._spawn(
            "kubelet",
            [
                str(binary),
                "--config",
                str(config),
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "--root-dir",
                str(root),
                "--cert-dir",
                str(self.directory / "kubelet-pki"),
                "--hostname-override",
                NODE_NAME,
                "--node-ip",
                NODE_IP,
                "--node-labels",
                "trailerlink.nhs.uk/real-node=true",
                "--v",
                "1",
            ],
        )

    def _start_kube_proxy(self, binary: Path) -> None:
        config = self.directory / "kube-proxy.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                    "kind": "KubeProxyConfiguration",
                    "clientConnection": {"kubeconfig": str(self.cluster.kubeconfig)},
                    "hostnameOverride": NODE_NAME,
                    "mode": "iptables",
                    "clusterCIDR": POD_SUBNET,
                    "bindAddress": NODE_IP,
                    "healthzBindAddress": f"127.0.0.1:{free_port()}",
                    "metricsBindAddress": f"127.0.0.1:{free_port()}",
                    "nodePortAddresses": [f"{NODE_IP}/32"],
                    # leave the host's conntrack table and timeouts alone
                    "conntrack": {
                        "maxPerCore": 0,
                        "min": 0,
                        "tcpEstablishedTimeout": "0s",
                        "tcpCloseWaitTimeout": "0s",
                    },
                    # no route_localnet: NodePorts on 127.0.0.1 are not needed
                    "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
                }
            )
        )
        self._spawn("kube-proxy", [str(binary), "--config", str(config)])

    def _ready(self, client: httpx.Client) -> bool:
        for proc in self._procs:
            if not proc.running():
                raise ClusterUnavailable(f"{proc.argv[0]} exited:\n{proc.tail()}")
        rsp = client.get(f"/api/v1/nodes/{NODE_NAME}")
        if rsp.status_code != 200:
            return False
        conditions = rsp.json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    # --- stop ------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every process and undo what they changed on the host (see the module
        docstring); safe after a failed or partial start, and twice. A node that never
        took its snapshot of the host (``start`` refused) touches nothing."""
        if self._before is None:
            return
        client = None
        with contextlib.suppress(Exception):
            client = self.cluster.client()
        kubelet = self._kubelet
        if client is not None and kubelet is not None and kubelet.running():
            # Pods deleted through the API are torn down by the kubelet itself: CNI DEL
            # (veth, hostPort rules, the pod's address), volumes unmounted. Whatever a
            # dead API server leaves, the sweep below removes.
            with contextlib.suppress(Exception):
                self._drain(client)
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.terminate(timeout=20)
        self._procs.clear()
        self._kubelet = None
        sweep(self.directory)
        (self.directory / "pids").unlink(missing_ok=True)
        self._before = None
        if client is not None:
            with contextlib.suppress(Exception):
                client.delete(f"/api/v1/nodes/{NODE_NAME}")

    def _drain(self, client: httpx.Client, timeout: float = 90.0) -> None:
        def pods() -> list[dict[str, object]]:
            rsp = client.get("/api/v1/pods", params={"fieldSelector": f"spec.nodeName={NODE_NAME}"})
            return rsp.json().get("items", []) if rsp.status_code == 200 else []

        # Owners first, or their controllers make new pods as fast as these go.
        for namespace in {p["metadata"]["namespace"] for p in pods()}:  # type: ignore[index]
            if namespace not in ("default", "kube-system", "kube-public", "kube-node-lease"):
                client.delete(f"/api/v1/namespaces/{namespace}")
        for pod in pods():
            meta = pod["metadata"]
            client.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",  # type: ignore[index]
                params={"gracePeriodSeconds": "5"},
            )
        with contextlib.suppress(Exception):
            wait_until(lambda: not pods(), timeout, "the real node's pods gone", interval=1)


def _restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        with contextlib.suppress(OSError):
            path = _sysctl_path(name)
            if path.read_text().strip() != value:
                path.write_text(value)


def sweep(directory: Path) -> None:
    """Remove what a real node left, whether it stopped cleanly or was killed: its
    containers' shims, mounts, network namespaces, the bridge and the node's veth,
    iptables chains, cgroups, libcni's cache and sysctls, as ``host-before.json``
    (written by :meth:`RealNode.start`) recorded them. Without that record nothing is
    touched: what would be removed could be another node's."""
    directory = directory.resolve()  # mounts are listed by absolute path
    record = directory / "host-before.json"
    try:
        before: dict[str, object] = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    # containerd's shims outlive it; they serve only our socket's namespace.
    shims = _run("pgrep", "-f", f"containerd-shim-runc-v2 .*-address {STATE}/", check=False)
    for pid in shims.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), 9)
    # Containers' processes, by runc's own state.
    runc_root = STATE / "runc"
    if runc_root.is_dir():
        for namespace in runc_root.iterdir():
            for container in namespace.iterdir() if namespace.is_dir() else []:
                _run(
                    "runc",
                    "--root",
                    str(namespace),
                    "delete",
                    "--force",
                    container.name,
                    check=False,
                )
    # Network namespaces the CRI made for pods (bind mounts under /run/netns).
    for name in sorted(_netns() - set(before.get("netns", []))):  # type: ignore[call-overload]
        if name.startswith("cni-"):
            _run("umount", "-l", str(NETNS_DIR / name), check=False)
            with contextlib.suppress(OSError):
                (NETNS_DIR / name).unlink()
    for point in sorted(_mounts_under(directory, STATE), key=len, reverse=True):
        _run("umount", "-l", point, check=False)
    for link in (BRIDGE, NODE_LINK):
        if (Path("/sys/class/net") / link).exists():
            _run("ip", "link", "del", link, check=False)
    _remove_chains(before.get("chains", {}))  # type: ignore[arg-type]
    for name in sorted(_cgroups() - set(before.get("cgroups", [])), reverse=True):  # type: ignore[call-overload]
        if _is_ours(name.split("/", 1)[1]):
            _remove_cgroup(CGROUP_ROOT / name)
    old_cache = before.get("cni_cache")
    if old_cache is None:
        shutil.rmtree(CNI_CACHE, ignore_errors=True)
    else:
        for name in _cni_cache() - set(old_cache):  # type: ignore[call-overload]
            (CNI_CACHE / "results" / name).unlink(missing_ok=True)
    _restore_sysctls(before.get("sysctls", {}))  # type: ignore[arg-type]
    shutil.rmtree(STATE, ignore_errors=True)
    record.unlink()


def _is_ours(cgroup: str) -> bool:
    """A pod container's cgroup (named by its 64-hex container id) or the kubelet's."""
    is_container_id = len(cgroup) == 64 and all(c in "0123456789abcdef" for c in cgroup)
    return is_container_id or cgroup.startswith(("kubepods", "k8s.io"))


def _remove_cgroup(path: Path) -> None:
    """rmdir a cgroup and its children, deepest first (only empty ones can go)."""
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def stop_directory(directory: Path) -> None:
    """Stop a node `make cluster NODE=real` left running in ``directory`` (its process
    groups) and sweep what it changed on the host (nothing to do where no node ran)."""
    if (directory / "host-before.json").exists():
        stop_processes(directory)
        sweep(directory)


__all__ = [
    "NODE_IP",
    "NODE_NAME",
    "RealNode",
    "build_node_images",
    "host_changes",
    "host_snapshot",
    "node_images",
    "stop_directory",
    "sweep",
]
