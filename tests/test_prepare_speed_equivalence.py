"""`prepare` after the speed work (issue 11) writes what it wrote before, pixel for pixel.

EXPECTED holds SHA-256 digests of prepared folders made by the code before that work (commit
a191bc8's prepare, x86-64, numpy 2.4.6, OpenCV 5.0.0, pydicom 3.0.2) from the synthetic sets
below as the conformant generator writes them (its DICOM headers changed after a191bc8, its
pixels did not): `source_digest`/`prepared_digests` as written here, the synthetic files made
with this tree and prepared with that commit. They cover the fast paths: 4084-like
block cuts (2042 px: blocks of 1021), an integer scale (1024), a scale with small blocks
(1000 px), an odd size that cannot be cut (1021), an image smaller than the target (420),
tall and wide images on both chest sides, masks with and without a mass, and every window
kind the synthetic formats write (window, VOI LUT Sequence, none: the fallback window).

The phantoms are written without film labels (`markers=False`) and prepared without the breast
crop (`crop=False`): the files and folders of those versions.

If "source" differs, the synthetic generator (not prepare) gives other files on this machine
and the other digests say nothing; if only the others differ, prepare's output changed.
"""

import hashlib
from pathlib import Path

import pytest

from mammoseg.io import read_csv, read_png
from mammoseg.prepare import PrepareOptions, prepare_dataset
from mammoseg.sources.synthetic import SynthStyle, write_synthetic_dataset

EXPECTED = {
    ("inbreast", (1024, 832)): {
        "source": "ace5383f826e182c95a29283503e976d80691dffc3b62da8b145f5e71ef11bf9",
        "images": "744802409f35fc5501679e57f967617a6ec682d9a0b45ef54963efb21395e3fc",
        "masks": "3abe5fe7113cd74fc562df72777cbae760db0f80cf5d4a47d349b2e5d72ca106",
        "manifest": "3ababb9a06270b944a3428a3837d148e96fac3d81f45846706f133a7980f3fdd",
    },
    ("manifest", (760, 1000)): {
        "source": "5bbc3dba24a1faefeb7d062a1eccbe6dd2e9fc65bc9c973b179b5d4c060f42fa",
        "images": "99684ee45db497d39c2382f7a42c309a0fb870fd441c6c18337e239fa8e8a47f",
        "masks": "c0d3c42e1381dbfd426d163ed4bec0e6b525d43283f205263f976e4587117b6e",
        "manifest": "4070d1ef0315f8849bb62812b70033778d21de8c561364faed04c4298d473b99",
    },
    ("cbis-ddsm", (1021, 700)): {
        "source": "17d4b23ee0bdd854144adc6935f2dc834261561b23c42951a68c45981aed14e2",
        "images": "92fbd791f645f208c3aa8b1cde5514f2609beda208baa18bf2e15277c79a14db",
        "masks": "fea477ac9903ed4c9d1eb4ff09de382aaae317928185851450879c39d2bce5d6",
        "manifest": "ddbb223cd78e4fce749bfac15ef198fad04c4914b888c97df83a35de9cd79453",
    },
    ("inbreast", (420, 300)): {
        "source": "4322b4b039cda99b6e78e66c240530cfa16f76bdab1d9b555285005e29c4545e",
        "images": "119e23adfc3684f59dff88106c16ccf99cdefca24c39028bcbd4fdd48c32583e",
        "masks": "74fab14a33b5c569487ddd69e98eed51ab89d4188b94993f5b95f4131b362704",
        "manifest": "3fd0a3bb8350ad521300e35c8914b900caf0d17cdb55d174406d759c3a4476ea",
    },
    ("inbreast", (2042, 1664)): {
        "source": "5ffa6cbbd9a9c33763ed6bcb3f7bbbb50ca58729747b420dcda4fe311852ab94",
        "images": "8f5b7497080e5b713b453c6362ddf54e5fa30430532c7fd64bd5fa0aa900b0a4",
        "masks": "c25406f2281f094f0724f5009a22415d6385d28dbc21ef7a05dc52b1eb2540d2",
        "manifest": "f76f1293ffc1febbe2f26016c6f1046d5509f85eeab398d16f827e96488e9f32",
    },
}
PATIENTS, SEED, SIZE = 2, 7, 512


def source_digest(src: Path) -> str:
    """Every generated file (names and bytes), less the generator's own bookkeeping."""
    digest = hashlib.sha256()
    for path in sorted(src.rglob("*")):
        if path.is_file() and not path.name.startswith(".") and path.name != "synth.json":
            digest.update(str(path.relative_to(src)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def prepared_digests(out: Path, src: Path) -> dict[str, str]:
    """Decoded pixels (with id, type and shape) of all images, of all masks, and manifest.csv
    with the source folder's path replaced by a placeholder."""
    images, masks = hashlib.sha256(), hashlib.sha256()
    for row in read_csv(out / "manifest.csv"):
        for digest, column in ((images, "image"), (masks, "mask")):
            pixels = read_png(out / row[column])
            digest.update(f"{row['id']} {pixels.dtype} {pixels.shape}".encode())
            digest.update(pixels.tobytes())
    manifest = (out / "manifest.csv").read_text(encoding="utf-8").replace(str(src), "<src>")
    return {"images": images.hexdigest(), "masks": masks.hexdigest(),
            "manifest": hashlib.sha256(manifest.encode()).hexdigest()}


def digests(root: Path, fmt: str, shape: tuple[int, int]) -> dict[str, str]:
    src, out = root / "src", root / "prepared"
    write_synthetic_dataset(src, PATIENTS, fmt, shape, SEED, progress=False, style=SynthStyle(markers=False))
    summary = prepare_dataset(fmt, src, out, PrepareOptions(size=SIZE, progress=False, crop=False))
    assert summary.n_images == 8 and summary.n_errors == 0
    return {"source": source_digest(src), **prepared_digests(out, src)}


@pytest.mark.parametrize("fmt, shape", list(EXPECTED), ids=[f"{f}-{h}x{w}" for f, (h, w) in EXPECTED])
def test_prepared_pixels_and_manifest_as_before(tmp_path, fmt, shape):
    found = digests(tmp_path, fmt, shape)
    expected = EXPECTED[(fmt, shape)]
    assert found["source"] == expected["source"], "the synthetic generator wrote other files on this machine"
    assert found == expected
