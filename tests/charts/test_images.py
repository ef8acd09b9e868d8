"""The Dockerfile and skaffold.yaml, checked statically (no Docker engine here).

What a build would need is checked without one: every service has a target whose
entrypoint is that service's console script, COPY sources exist and are not excluded by
.dockerignore, the runtime is a numeric non-root user with a stop signal, base images
are pinned, and skaffold builds each target and sets the chart values that exist.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

import pytest
import yaml
from chartkit import CHARTS, ROOT

SERVICES = ("gateway", "codec", "uplink", "worklist", "ingest", "monitor")
TRAILER = ("gateway", "codec", "uplink", "worklist", "monitor")
CENTRAL = ("ingest", "monitor")
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str, str]]:
    """(stage, INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out, stage = [], ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.search(r"\bAS\s+(\S+)", rest, re.I)
            stage = m.group(1) if m else ""
        out.append((stage, word, rest.strip()))
    return out


INSTR = _instructions()


def _stage(name: str) -> list[tuple[str, str]]:
    return [(w, a) for s, w, a in INSTR if s == name]


def _parents(name: str) -> list[str]:
    """The stage chain from ``name`` up to its base image."""
    chain = [name]
    while True:
        (base,) = [a.split()[0] for s, w, a in INSTR if s == chain[-1] and w == "FROM"]
        if base not in {s for s, _, _ in INSTR}:
            return chain
        chain.append(base)


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _ignored(path: str) -> bool:
    path = path.rstrip("/")
    for pattern in _dockerignore():
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            tail = pattern[3:]
            parts = path.split("/")
            if any(
                fnmatch.fnmatch("/".join(parts[i:]), tail) or fnmatch.fnmatch(parts[i], tail)
                for i in range(len(parts))
            ):
                return True
        elif fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            return True
    return False


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_target_running_its_console_script(service: str) -> None:
    stage = _stage(service)
    assert stage, f"no Dockerfile target {service}"
    (entrypoint,) = [json.loads(a) for w, a in stage if w == "ENTRYPOINT"]
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert entrypoint == [f"trailerlink-{service}"]
    assert entrypoint[0] in scripts
    # its venv holds that service's package (and what it depends on), nothing else
    (copy,) = [a for w, a in stage if w == "COPY"]
    venv_stage = re.search(r"--from=(\S+)", copy).group(1)
    runs = " ".join(a for w, a in _stage(venv_stage) if w == "RUN")
    assert f"--package trailerlink-{service}" in runs and "--no-dev" in runs
    exposed = " ".join(a for w, a in stage if w == "EXPOSE").split()
    main = ROOT / "services" / service / "src" / f"trailerlink_{service}"
    settings_src = "".join(p.read_text() for p in main.glob("*.py"))
    port = re.search(r"http_port: int = Field\(\s*(\d+)", settings_src).group(1)
    assert port in exposed


def test_runtime_is_non_root_with_a_stop_signal() -> None:
    for service in SERVICES:
        chain = _parents(service)
        instructions = [(w, a) for s in chain for w, a in _stage(s)]
        (user,) = [a for w, a in instructions if w == "USER"]
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid"
        (signal,) = [a for w, a in instructions if w == "STOPSIGNAL"]
        assert signal == "SIGTERM"
        env = " ".join(a for w, a in instructions if w == "ENV")
        assert "PYTHONDONTWRITEBYTECODE=1" in env  # read-only root filesystem


def test_base_images_are_pinned() -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE, flags=re.M))
    stages = {s for s, _, _ in INSTR}
    for _, word, rest in INSTR:
        if word != "FROM":
            continue
        image = rest.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if image in stages:
            continue
        name = image.split("@")[0]
        assert ":" in name.rsplit("/", 1)[-1], f"{image}: no tag"
        tag = name.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), f"{image}: not pinned"
    assert re.search(r'"uv==\$\{UV_VERSION\}"', DOCKERFILE) and args["UV_VERSION"]


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    sources = []
    for _, word, rest in INSTR:
        if word not in ("COPY", "ADD") or "--from=" in rest:
            continue
        parts = [p for p in rest.split() if not p.startswith("--")]
        sources += parts[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
        assert not _ignored(src), f"COPY {src}: excluded by .dockerignore"


def test_generated_contracts_are_made_in_the_build_not_copied() -> None:
    assert _ignored("libs/events/src/trailerlink_events/_generated")
    gen = DOCKERFILE.index("python scripts/gen_proto.py")
    first_sync = DOCKERFILE.index("uv sync --no-dev")
    assert gen < first_sync, "contracts must be generated before the wheels are built"
    # what the workspace needs to build is in the context
    for path in (
        "pyproject.toml",
        "uv.lock",
        "proto/topics.yaml",
        "libs/events/pyproject.toml",
        "services/gateway/src/trailerlink_gateway/main.py",
    ):
        assert not _ignored(path), path
    for path in (".venv", "services/gateway/tests/test_gateway_store.py", ".git"):
        assert _ignored(path), path


def test_skaffold_builds_every_target_and_deploys_both_charts() -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    assert config["apiVersion"].startswith("skaffold/v4")
    targets = {a["image"]: a["docker"]["target"] for a in config["build"]["artifacts"]}
    assert targets == {f"trailerlink-{s}": s for s in SERVICES}
    for artifact in config["build"]["artifacts"]:
        assert artifact["docker"]["dockerfile"] == "Dockerfile"
        assert _stage(artifact["docker"]["target"])
    profiles = {p["name"]: p for p in config["profiles"]}
    assert set(profiles) == {"trailer", "central"}
    for name, services in (("trailer", TRAILER), ("central", CENTRAL)):
        profile = profiles[name]
        built = {a["image"] for a in profile["build"]["artifacts"]}
        assert built == {f"trailerlink-{s}" for s in services}
        (release,) = profile["manifests"]["helm"]["releases"]
        chart = ROOT / release["chartPath"]
        assert chart == CHARTS / name
        values = yaml.safe_load((chart / "values.yaml").read_text())
        templates = release["setValueTemplates"]
        for service in services:
            for field in ("repository", "tag", "digest"):
                key = f"{service}.image.{field}"
                assert key in templates, key
                assert field in values[service]["image"], key
                image_var = f"trailerlink_{service}"
                assert image_var in templates[key]
