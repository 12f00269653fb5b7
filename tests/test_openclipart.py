import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from common.errors import InputError
from demo import build_openclipart as build_openclipart_dataset
from demo.openclipart import (BLANK, BOILERPLATE, DUPLICATE, GENERATED, MISSING_PAIR, NO_TEXT, NOT_TAKEN,
                              TOO_BIG, TOO_SMALL, UNREADABLE_PNG, UNREADABLE_SVG, FetchError, SvgText,
                              build_openclipart, compose_text, fetch_packages, read_svg_text)

ADOBE_DOCTYPE = """<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.0//EN"
  "http://www.w3.org/TR/2001/REC-SVG-20010904/DTD/svg10.dtd" [
  <!ENTITY ns_svg "http://www.w3.org/2000/svg">
  <!ENTITY ns_xlink "http://www.w3.org/1999/xlink">
]>"""
BOMB_DOCTYPE = """<!DOCTYPE svg [
  <!ENTITY a "lol">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">
]>"""


def svg(title="", description="", keywords=(), doctype="", body=""):
    lis = "".join(f"<rdf:li>{k}</rdf:li>" for k in keywords)
    return f"""<?xml version="1.0" encoding="UTF-8"?>{doctype}
<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <metadata><rdf:RDF><cc:Work rdf:about="">
  <dc:title>{title}</dc:title><dc:description>{description}</dc:description>
  <dc:subject><rdf:Bag>{lis}</rdf:Bag></dc:subject>
  <dc:creator><cc:Agent><dc:title>Jane Author</dc:title></cc:Agent></dc:creator>
 </cc:Work></rdf:RDF></metadata>{body}<rect width="10" height="10"/></svg>"""


def opaque(size, colour=(0, 90, 200)):
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).rectangle([size[0] // 4, size[1] // 4, size[0] * 3 // 4, size[1] * 3 // 4], fill=colour)
    return img


def disc_on_transparent():
    img = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse([150, 150, 249, 249], fill=(220, 0, 0, 255))
    return img


def make_root(base: Path) -> Path:
    """A small tree laid out as the packages' usr/share/openclipart, with one case of each kind."""
    root = base / "usr/share/openclipart"

    def add(rel, picture=None, text=None):
        if picture is not None:
            p = root / "png" / f"{rel}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(picture, bytes):
                p.write_bytes(picture)
            else:
                picture.save(p)
        if text is not None:
            s = root / "svg" / f"{rel}.svg"
            s.parent.mkdir(parents=True, exist_ok=True)
            s.write_text(text)

    add("animals/mammals/cat_01", opaque((300, 200)),
        svg("Cat", "A sleeping  cat", ["", "animal", "hash", "mammal", "pet", "pet"]))
    add("food/apple_01", disc_on_transparent(), svg("Apple", keywords=["fruit"]))
    add("food/bread_01", opaque((1500, 1000), (150, 100, 20)), svg("Bread", "Fresh loaf. HASH(0x85a4f2c)"))
    add("office/stapler_01", opaque((64, 64)), svg("Stapler", doctype=ADOBE_DOCTYPE, keywords=["office"]))
    add("unsorted/thing_01", opaque((50, 40)), svg("Thing", keywords=["misc"]))
    for k in range(5):
        add(f"plants/tree_{k:02d}", opaque((80, 60 + k)), svg(f"Tree {k}", keywords=["plant", f"kind{k}"]))
    # left out
    (root / "png/animals/cat_link.png").symlink_to("mammals/cat_01.png")
    (root / "svg/animals/cat_link.svg").symlink_to("mammals/cat_01.svg")
    add("plants/orphan_01", opaque((40, 40)))
    add("plants/lonely_01", text=svg("Lonely", keywords=["plant"]))
    add("shapes/broken_01", opaque((40, 40)), svg("Broken")[:200])
    add("shapes/bomb_01", opaque((40, 40)), svg("&b;", doctype=BOMB_DOCTYPE))
    add("people/nobody_01", opaque((40, 40)), svg("", "", ["", "  "]))
    add("computer/cd_01", opaque((40, 40)), svg("Cd", keywords=["computer"]))    # stop words only
    add("shapes/stars/star_05pt02step", opaque((40, 40)), svg("gramastar", keywords=["stars", "magick"]))
    for name in "abc":
        add(f"computer/icons/lemon_{name}", opaque((40, 40)), svg("Lemon SVG theme", keywords=["icon"]))
    add("signs/corrupt_01", b"\x89PNG\r\n\x1a\n" + bytes(range(200)), svg("Corrupt", keywords=["sign"]))
    add("food/giant_01", Image.new("L", (2000, 2000), 0), svg("Giant", keywords=["food"]))
    add("signs/flag_tiny", opaque((6, 3)), svg("Tiny flag", keywords=["flag"]))
    add("special/gradient_01", Image.new("RGBA", (100, 100), (0, 0, 0, 0)), svg("Gradient", keywords=["x"]))
    return root


EXPECTED_SKIPS = {DUPLICATE: 1, MISSING_PAIR: 2, UNREADABLE_SVG: 2, NO_TEXT: 2, GENERATED: 1,
                  BOILERPLATE: 3, UNREADABLE_PNG: 1, TOO_BIG: 1, TOO_SMALL: 1, BLANK: 1}
SETTINGS = dict(max_side=256, max_pixels=3_000_000, max_shared_text=2, seed=0)


@pytest.fixture(scope="module")
def built(module_tmp):
    base = module_tmp("oca")
    root = make_root(base / "pkg")
    report = build_openclipart(base / "out", root=root, workers=1, **SETTINGS)
    return base, root, report


def records(manifest) -> list[dict]:
    return [json.loads(line) for line in Path(manifest).read_text().splitlines()]


def test_counts_kept_and_skipped_by_reason(built):
    _, _, report = built
    assert report.kept == 10 and not report.reused
    assert report.skipped == EXPECTED_SKIPS
    assert report.splits == {"train": 8, "val": 1, "test": 1}
    assert report.labels == {"animals": 1, "food": 2, "office": 1, "plants": 5}
    assert any("gramastar" in e for e in report.examples[GENERATED])
    text = "\n".join(report.lines())
    assert "kept 10 of 25 pictures" in text and "too big to decode" in text


def test_manifest_content(built):
    base, _, report = built
    recs = records(report.manifest)
    assert [r["id"] for r in recs] == sorted(r["id"] for r in recs)
    by_id = {r["id"]: r for r in recs}
    assert set(by_id) == {"animals/mammals/cat_01", "food/apple_01", "food/bread_01", "office/stapler_01",
                          "unsorted/thing_01"} | {f"plants/tree_{k:02d}" for k in range(5)}
    cat = by_id["animals/mammals/cat_01"]
    # the creator's dc:title, the empty keyword, the "hash" artefact and the repeat are left out
    assert cat["texts"] == ["Cat. animal, mammal, pet. A sleeping cat."]
    assert cat["label"] == "animals"
    assert cat["image"] == "cache/png-256/animals/mammals/cat_01.png"
    assert by_id["food/bread_01"]["texts"] == ["Bread. Fresh loaf."]
    assert by_id["office/stapler_01"]["texts"] == ["Stapler. office."]
    assert "label" not in by_id["unsorted/thing_01"]
    assert sorted(r["split"] for r in recs) == ["test"] + ["train"] * 8 + ["val"]
    for r in recs:
        assert (base / "out" / r["image"]).is_file()


def test_resized_pictures(built):
    base, _, report = built
    out = base / "out"
    by_id = {r["id"]: r for r in records(report.manifest)}
    sizes = {}
    for key, r in by_id.items():
        with Image.open(out / r["image"]) as im:
            assert im.mode == "RGB"
            sizes[key] = im.size
    assert sizes["animals/mammals/cat_01"] == (256, 171)    # only the longest side is bounded
    assert sizes["food/bread_01"] == (256, 171)
    assert sizes["office/stapler_01"] == (64, 64)           # never enlarged
    # the transparent picture is cut to the drawn disc with a margin, on white
    apple = np.asarray(Image.open(out / by_id["food/apple_01"]["image"]))
    assert apple.shape == (106, 106, 3)
    assert (apple[0, 0] == 255).all() and tuple(apple[53, 53]) == (220, 0, 0)


def test_parallel_build_is_identical_and_a_finished_build_is_reused(built, tmp_path):
    base, root, report = built
    other = build_openclipart(tmp_path / "out", root=root, workers=2, **SETTINGS)
    assert Path(other.manifest).read_text() == Path(report.manifest).read_text()
    for r in records(other.manifest):
        assert (tmp_path / "out" / r["image"]).read_bytes() == (base / "out" / r["image"]).read_bytes()
    again = build_openclipart(tmp_path / "out", root=root, workers=2, **SETTINGS)
    assert again.reused and again.skipped == other.skipped and again.kept == other.kept
    limited = build_openclipart(tmp_path / "small", root=root, workers=1, limit=4, **SETTINGS)
    ids = [r["id"] for r in records(limited.manifest)]
    picture_checks = (TOO_BIG, UNREADABLE_PNG, TOO_SMALL, BLANK)      # 4 fixture pictures fail one
    tried = limited.kept + sum(limited.skipped.get(reason, 0) for reason in picture_checks)
    assert tried + limited.skipped[NOT_TAKEN] == report.kept + 4
    assert len(ids) == 4 and set(ids) < {r["id"] for r in records(report.manifest)}


def test_svg_metadata_reader(tmp_path):
    p = tmp_path / "a.svg"
    p.write_text(svg("Owl", "A bird\n  at night", ["bird", "", "bird", "night"], doctype=ADOBE_DOCTYPE))
    assert read_svg_text(p) == SvgText("Owl", "A bird at night", ("bird", "night"))
    p.write_text(svg("&b;", doctype=BOMB_DOCTYPE))
    with pytest.raises(ValueError, match="refused"):
        read_svg_text(p)
    p.write_text(svg("x", doctype='<!DOCTYPE svg [<!ENTITY e SYSTEM "file:///etc/passwd">]>'))
    with pytest.raises(ValueError, match="refused"):
        read_svg_text(p)
    assert compose_text(SvgText("Sun!", "", ())) == "Sun!"
    assert compose_text(SvgText("", "", ("hash",))) == ""


def test_a_bad_root_is_a_one_line_error(tmp_path):
    with pytest.raises(InputError, match="no png/ and svg/ folders"):
        build_openclipart(tmp_path / "out", root=tmp_path)


def fake_apt_get(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "apt-get").write_text("#!/bin/sh\n" + script)
    (bin_dir / "apt-get").chmod(0o755)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_downloads_unpacks_and_reuses(tmp_path, monkeypatch):
    """apt-get is faked by a script that hands out two .deb files built here from a fixture."""
    tree = make_root(tmp_path / "tree")
    debs = tmp_path / "debs"
    debs.mkdir()
    for pkg, part in (("openclipart-png", "png"), ("openclipart-svg", "svg")):
        d = tmp_path / pkg
        shutil.copytree(tree / part, d / "usr/share/openclipart" / part, symlinks=True)
        (d / "DEBIAN").mkdir()
        (d / "DEBIAN/control").write_text(f"Package: {pkg}\nVersion: 1:0.18\nArchitecture: all\n"
                                          "Maintainer: Test <t@example.org>\nDescription: fixture\n")
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(d), str(debs / f"{pkg}_1%3a0.18_all.deb")],
                       check=True, capture_output=True)
    fake_apt_get(tmp_path / "bin", f'cp {debs}/"$2"_*.deb .\necho "$2" >> {tmp_path}/calls\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    report = build_openclipart(tmp_path / "out", cache=tmp_path / "cache", workers=1, **SETTINGS)
    assert report.kept == 10 and report.skipped == EXPECTED_SKIPS
    assert (tmp_path / "calls").read_text().split() == ["openclipart-png", "openclipart-svg"]
    assert fetch_packages(tmp_path / "cache") == tmp_path / "cache/extracted/usr/share/openclipart"
    assert len((tmp_path / "calls").read_text().split()) == 2, "a finished fetch is reused"


def test_failed_download_says_what_to_do(tmp_path, monkeypatch, capsys):
    fake_apt_get(tmp_path / "bin", 'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(FetchError, match="Unable to locate package openclipart-png.*make demo DATA=synthetic"):
        fetch_packages(tmp_path / "cache")
    with pytest.raises(SystemExit) as e:
        build_openclipart_dataset.main(["--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make demo DATA=synthetic" in err


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_without_system_package_lists_uses_lists_in_the_cache(tmp_path, monkeypatch):
    """A fresh machine has no package lists: the lists are fetched into the cache and used."""
    debs = tmp_path / "debs"
    debs.mkdir()
    for pkg in ("openclipart-png", "openclipart-svg"):
        d = tmp_path / pkg
        (d / "usr/share/openclipart").mkdir(parents=True)
        (d / "DEBIAN").mkdir()
        (d / "DEBIAN/control").write_text(f"Package: {pkg}\nVersion: 1\nArchitecture: all\n"
                                          "Maintainer: Test <t@example.org>\nDescription: fixture\n")
        subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(d), str(debs / f"{pkg}_1_all.deb")],
                       check=True, capture_output=True)
    # Fails without the private lists option; "update" with it records the lists folder.
    fake_apt_get(tmp_path / "bin", f'''echo "$@" >> {tmp_path}/calls
case "$*" in
  update*Dir::State::Lists=*) touch {tmp_path}/updated ;;
  download*Dir::State::Lists=*) [ -e {tmp_path}/updated ] && cp {debs}/"$2"_*.deb . ;;
  *) echo "E: Unable to locate package $2" >&2; exit 100 ;;
esac
''')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    root = fetch_packages(tmp_path / "cache")
    assert root.is_dir()
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "download openclipart-png" and calls[1].startswith("update -o Dir::State::Lists=")
    assert str(tmp_path / "cache" / "apt" / "lists") in calls[1]
    assert all("Dir::State::Lists" in c for c in calls[2:] if not c.startswith("download openclipart-svg"))
