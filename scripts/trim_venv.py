"""Trim a service image's virtualenv to what runs, then prove the codecs still work.

Run by the Dockerfile after ``uv sync --package ...`` (with the venv's own python):

    /opt/trailerlink/venv/bin/python scripts/trim_venv.py /opt/trailerlink/venv

Removed: imagecodecs' extension modules and bundled libraries for codecs trailerlink never
uses (it ships dozens — AVIF, JPEG XL, TIFF, ... — about 75 MB; the lossless container
uses JPEG-LS through CharLS and HTJ2K through OpenJPH), zstandard's unused CFFI backend
(the C extension is the one imported), and third-party packages' own test suites. The
images go to trailers over 4G, so every megabyte is paid again on each upgrade.

Afterwards a JPEG-LS and an HTJ2K round trip must reproduce their input exactly, and
CharLS must still load for the codec's direct encoder; otherwise the build fails.
"""

from __future__ import annotations

import shutil
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
    verify(site)
    print(f"trim_venv: {freed / 1e6:.0f} MB removed from {site}, codecs verified")


if __name__ == "__main__":
    main()
