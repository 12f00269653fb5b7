"""Fetching the Open Clip Art Library as Debian packages it, without root and without a system
package list: when plain `apt-get download` cannot find the packages (a fresh machine often has
no lists), the lists are fetched once into the cache folder and the download retried with them."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from common.errors import InputError

PACKAGES = ("openclipart-png", "openclipart-svg")
SHARE = Path("usr/share/openclipart")
SYNTHETIC_HINT = "use the synthetic set instead: make demo DATA=synthetic"


class FetchError(InputError):
    """The packages could not be downloaded or unpacked."""


def fetch_packages(cache: Path) -> Path:
    """apt-get download the two packages into cache/debs and unpack them (no root needed).

    Returns the unpacked usr/share/openclipart folder; a finished fetch is reused.
    """
    extracted = cache / "extracted"
    if (extracted / ".done").exists():
        return extracted / SHARE
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for pkg in PACKAGES:
        if not any(debs.glob(f"{pkg}_*.deb")):
            _download(pkg, debs, cache / "apt")
    tmp = cache / "extracted.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb.resolve()), str(tmp.resolve())], cache, f"dpkg-deb -x {deb.name}")
    shutil.rmtree(extracted, ignore_errors=True)
    os.replace(tmp, extracted)
    (extracted / ".done").touch()
    return extracted / SHARE


def _private_lists(apt: Path) -> list[str]:
    """apt options that keep package lists and apt's cache inside `apt` (no root needed)."""
    for sub in ("lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    return ["-o", f"Dir::State::Lists={(apt / 'lists').resolve()}",
            "-o", f"Dir::Cache={(apt / 'cache').resolve()}"]


def _download(pkg: str, debs: Path, apt: Path) -> None:
    # apt-get writes into its working folder: an interrupted download stays out of debs/.
    partial = debs / f"partial-{pkg}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    what = f"apt-get download {pkg}"
    try:
        _run(["apt-get", "download", pkg], partial, what)
    except FetchError as first:
        try:
            _run(["apt-get", "update", *_private_lists(apt)], partial, "apt-get update (lists in the cache)")
            _run(["apt-get", "download", pkg, *_private_lists(apt)], partial, what)
        except FetchError:
            raise first from None
    for deb in partial.glob("*.deb"):
        os.replace(deb, debs / deb.name)
    shutil.rmtree(partial)
    if not any(debs.glob(f"{pkg}_*.deb")):
        raise FetchError(f"{what} left no {pkg}_*.deb file: {SYNTHETIC_HINT}")


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise FetchError(f"{what}: {cmd[0]} is not installed (a Debian-based system is needed): "
                         f"{SYNTHETIC_HINT}") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        raise FetchError(f"{what} failed ({lines[-1] if lines else f'exit {r.returncode}'}): no network "
                         f"or no package archive reachable? Or {SYNTHETIC_HINT}")
