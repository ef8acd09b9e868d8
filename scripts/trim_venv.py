"""Trim a service image's virtualenv to what runs, then prove the codecs still work.

Run by the Dockerfile after ``uv sync --package ...`` (with the venv's own python):

    /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

Removed: imagecodecs' extension modules and bundled libraries for codecs trailerlink never
uses (it ships dozens — AVIF, JPEG XL, TIFF, ... — about 75 MB; the lossless container
uses JPEG-LS through CharLS and HTJ2K through OpenJPH), zstandard's unused CFFI backend
(the C extension is the one imported), and third-party packages' own test suites. The
images go to trailers over 4G, so every megabyte is paid again on each upgrade.

Then the extension modules are stripped of their symbol tables (``strip
--strip-unneeded``, GNU binutils): some wheels ship them unstripped (zstandard's C
backend is 11.6 MB with its symbols, 1 MB without). Libraries in a wheel's ``*.libs``
folder are left as they are: auditwheel rewrote them with patchelf, and strip can break
such a file. Every extension module that imported before must import after.

Afterwards a JPEG-LS and an HTJ2K round trip must reproduce their input exactly, and
CharLS must still load for the codec's direct encoder; otherwise the build fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

KEEP_IMAGECODECS = ("_imcd", "_shared", "_shared_cython", "_jpegls", "_htj2k")
KEEP_IMAGECODECS_LIBS = ("libcharls", "libopenjph")


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"trim_venv: no single site-packages under {venv}")
    return found[0]


def trim(site: Path) -> int:
    """Remove what never runs; returns the bytes freed."""
    doomed: list[Path] = []
    codecs = site / "imagecodecs"
    if codecs.is_dir():
        doomed += [
            p
            for p in codecs.glob("_*.so")
            if not p.name.startswith(tuple(f"{k}." for k in KEEP_IMAGECODECS))
        ]
        doomed += [
            p
            for p in (site / "imagecodecs.libs").glob("*")
            if not p.name.startswith(KEEP_IMAGECODECS_LIBS)
        ]
    doomed += list((site / "zstandard").glob("_cffi*.so"))
    doomed += [
        p
        for p in site.glob("*/**/tests")
        if p.is_dir() and not p.relative_to(site).parts[0].startswith("trailerlink")
    ]
    freed = 0
    for path in doomed:
        if not path.exists():
            continue  # inside a tests folder removed already
        if path.is_dir():
            freed += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path)
        else:
            freed += path.stat().st_size
            path.unlink()
    return freed


def _extension_modules(site: Path) -> dict[str, Path]:
    """Python extension modules (module name -> file), outside auditwheel's ``*.libs``."""
    found: dict[str, Path] = {}
    for path in sorted(site.rglob("*.so")):
        rel = path.relative_to(site)
        if any(part.endswith(".libs") for part in rel.parts) or ".dist-info" in str(rel):
            continue
        module = ".".join((*rel.parts[:-1], rel.name.split(".", 1)[0]))
        found[module] = path
    return found


def _importable(modules: list[str]) -> set[str]:
    """Which of ``modules`` import, each tried in one fresh interpreter (this venv's)."""
    probe = (
        "import importlib, json, sys\n"
        "ok = []\n"
        "for name in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        continue\n"
        "    ok.append(name)\n"
        "print(json.dumps(ok))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(modules)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"trim_venv: importing the extension modules crashed "
            f"(exit {result.returncode}): {result.stderr[-500:]}"
        )
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def strip_extensions(site: Path) -> int:
    """Strip the extension modules' symbol tables; returns the bytes freed."""
    strip = shutil.which("strip")
    if strip is None:
        raise SystemExit("trim_venv: strip (GNU binutils) is missing from the build stage")
    modules = _extension_modules(site)
    before = _importable(sorted(modules))
    freed = 0
    for path in modules.values():
        size = path.stat().st_size
        stripped = path.with_name(path.name + ".stripped")
        subprocess.run([strip, "--strip-unneeded", "-o", str(stripped), str(path)], check=True)
        if stripped.stat().st_size < size:
            freed += size - stripped.stat().st_size
            stripped.replace(path)
        else:
            stripped.unlink()
    broken = before - _importable(sorted(before))
    if broken:
        raise SystemExit(f"trim_venv: no longer import after strip: {sorted(broken)}")
    return freed


def verify(site: Path) -> None:
    """The codecs the sealed format uses still round-trip exactly."""
    if not (site / "imagecodecs").is_dir():
        return
    import imagecodecs
    import numpy as np

    image = np.random.default_rng(7).integers(0, 1 << 14, (64, 48), dtype=np.uint16)
    if not np.array_equal(
        imagecodecs.jpegls_decode(imagecodecs.jpegls_encode(image, level=0)), image
    ):
        raise SystemExit("trim_venv: JPEG-LS round trip broken")
    if not np.array_equal(imagecodecs.htj2k_decode(imagecodecs.htj2k_encode(image)), image):
        raise SystemExit("trim_venv: HTJ2K round trip broken")
    try:
        from trailerlink_sealed import codecs
    except ImportError:
        return
    if codecs._load_charls() is None:
        raise SystemExit("trim_venv: CharLS no longer loads for the codec's encoder")


def main() -> None:
    site = _site_packages(Path(sys.argv[1]))
    freed = trim(site)
    freed += strip_extensions(site)
    verify(site)
    print(f"trim_venv: {freed / 1e6:.0f} MB removed from {site}, codecs verified")


if __name__ == "__main__":
    main()
