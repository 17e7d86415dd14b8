"""Hostile files: what an archive mammoseg does not control can hold, and how each is refused.

Every file here is made by the test, small, and goes through the real code path (the CLI
commands `prepare` and `predict`, or the reader they call). What is checked is what a person
on a shared server sees: the one-line reason in errors.csv or on stderr, the exit status,
what is on disk, and the peak memory of the command (measured in a child process).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

import mammoseg
from mammoseg.checkpoint import read_checkpoint, save_checkpoint
from mammoseg.cli import main
from mammoseg.dicom import DicomReadError, read_mammogram
from mammoseg.dicom.bounded import read_dicom
from mammoseg.io import read_csv
from mammoseg.layouts import RunLayout
from mammoseg.models import build_model

from dicom_factory import annotation_seg, mg_dataset, save_dataset, write_mg
from run_factory import SPEC, write_random_run

SRC = Path(mammoseg.__file__).resolve().parents[1]
#: Every test is bounded in time (those that run commands in child processes say their own bound).
pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------------- helpers


def breast(height: int = 96, width: int = 72) -> np.ndarray:
    """12-bit breast against the left edge with a brighter 'mass' (every reader's test image)."""
    img = np.full((height, width), 100, np.uint16)
    img[:, : width * 2 // 3] = 1500
    img[30:50, 10:30] = 3000
    return img


def write_deflate_bomb(path: Path, ds: Dataset, inflated_mib: int) -> Path:
    """`ds` as a Deflated Explicit VR Little Endian file, followed by a private OB element of
    `inflated_mib` MiB of zeros: about 1 KB per MiB on disk.

    The zeros are deflated once, 1 MiB with a full flush (which resets the compressor), and that
    block is repeated: the stream is what compressing all of it would give, made in milliseconds.
    """
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    body.write(struct.pack("<HH2sH", 0x7FE1, 0x0010, b"LO", 4) + b"BOMB")
    body.write(struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"OB", 0, inflated_mib << 20))
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = packer.compress(body.getvalue()) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(bytes(1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    meta = ds.file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with open(path, "wb") as raw:
        raw.write(bytes(128) + b"DICM")
        fp = DicomFileLike(raw)
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_file_meta_info(fp, meta)
        raw.write(head)
        for _ in range(inflated_mib):
            raw.write(block)
        raw.write(packer.flush())
    return path


#: Runs `mammoseg` and prints its peak RSS. A process's ru_maxrss keeps the RSS of the process it
#: was forked from (Linux keeps the high-water mark across execve), which would count pytest's own
#: memory; /proc's VmHWM is this program's alone. Worker processes are its children.
_PEAK = (
    "import re, resource, sys\n"
    "from mammoseg.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "try:\n"
    "    own = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1))\n"
    "except OSError:\n"
    "    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "print('PEAK_KB', max(own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def run_measured(argv: list[str]) -> tuple[int, int, str]:
    """`mammoseg argv` in a fresh process: (exit status, peak RSS in KB of it and its workers, stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _PEAK, *argv], capture_output=True, text=True, env=env,
                          timeout=240)
    peak = re.search(r"PEAK_KB (\d+)", done.stdout)
    assert peak, done.stdout + done.stderr
    return done.returncode, int(peak.group(1)), done.stderr


def error_line(capsys) -> str:
    """The command's stderr, which must be exactly one line."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --------------------------------------------------------------------------- 1. one bounded reader


@pytest.mark.timeout(300)
def test_deflate_bomb_roi_mask_is_refused_with_the_memory_of_a_normal_run(tmp_path):
    """A 1 MB CBIS-DDSM ROI mask that inflates to 1 GiB goes to errors.csv with the reason; the
    other images are prepared, and the run's peak memory is that of a run without the bomb."""
    src = tmp_path / "cbis"
    assert main(["synth", "--format", "cbis-ddsm", "--patients", "3", "--shape", "128x96", "--out", str(src)]) == 0
    common = ["prepare", "--format", "cbis-ddsm", "--src", str(src), "--size", "64", "--no-progress"]
    rc, normal_kb, _ = run_measured([*common, "--out", str(tmp_path / "normal")])
    assert rc == 0 and read_csv(tmp_path / "normal" / "errors.csv") == []
    n_images = len(read_csv(tmp_path / "normal" / "manifest.csv"))

    # the first ROI mask: of the full image's size (its folder also holds the smaller crop)
    roi, ds = next((path, ds) for path in sorted(src.rglob("*ROI mask images*/*.dcm"))
                   if (ds := pydicom.dcmread(path)).Rows == 128)
    write_deflate_bomb(roi, ds, 1024)
    assert roi.stat().st_size < 1_200_000
    rc, hostile_kb, _ = run_measured([*common, "--out", str(tmp_path / "hostile")])
    assert rc == 0
    (error,) = read_csv(tmp_path / "hostile" / "errors.csv")
    assert str(roi) in error["reason"] and "inflates beyond 130 MB" in error["reason"]
    assert "\n" not in error["reason"]
    assert len(read_csv(tmp_path / "hostile" / "manifest.csv")) == n_images - 1
    assert hostile_kb <= 2 * normal_kb, (hostile_kb, normal_kb)


def test_every_header_and_seg_read_is_bounded(tmp_path):
    """The DICOMweb header checks, the SEG masks and the images all refuse the same bomb in one line."""
    from mammoseg.dicom.seg import read_seg_mask
    from mammoseg.inference.dicomweb import _header_skip_reason
    from mammoseg.sources.dicomweb import _header_problem

    source = mg_dataset(breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096, PatientID="p",
                        StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())
    image_bomb = write_deflate_bomb(tmp_path / "image.dcm", source, 512)
    mask = np.zeros((96, 72), bool)
    mask[30:50, 10:30] = True
    seg = annotation_seg(source, {"Mass": mask})
    seg_bomb = write_deflate_bomb(tmp_path / "seg.dcm", seg, 512)
    reason = _header_problem(image_bomb)
    assert reason.startswith(f"{image_bomb}: deflated data inflates beyond 130 MB")
    assert _header_skip_reason(image_bomb) == ""  # predict reads it and reports it in errors.csv
    with pytest.raises(DicomReadError, match=r"image\.dcm: deflated data inflates beyond"):
        read_mammogram(image_bomb)
    with pytest.raises(DicomReadError, match=r"seg\.dcm: deflated data inflates beyond"):
        read_seg_mask(seg_bomb, source.SOPInstanceUID, (1,), 96, 72)
    # the same SEG, not a bomb, is read: the bounded reader changes nothing for a good file
    save_dataset(seg, tmp_path / "good_seg.dcm")
    np.testing.assert_array_equal(read_seg_mask(tmp_path / "good_seg.dcm", source.SOPInstanceUID, (1,), 96, 72), mask)


@pytest.mark.timeout(20)
def test_only_regular_files_are_opened(tmp_path):
    """A FIFO would block `open` forever and /dev/zero never ends: both are refused at once."""
    fifo = tmp_path / "fifo.dcm"
    os.mkfifo(fifo)
    with pytest.raises(DicomReadError, match=r"fifo\.dcm: not a regular file \(a FIFO\)"):
        read_mammogram(fifo)
    zero = tmp_path / "zero.dcm"
    zero.symlink_to("/dev/zero")
    with pytest.raises(DicomReadError, match=r"zero\.dcm: not a regular file \(a character device\)"):
        read_dicom(zero, stop_before_pixels=True)
    (tmp_path / "folder").mkdir()
    with pytest.raises(DicomReadError, match=r"folder: not a regular file \(a directory\)"):
        read_dicom(tmp_path / "folder")
    # a symbolic link to a regular file is read as that file
    good = write_mg(tmp_path / "good.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    (tmp_path / "link.dcm").symlink_to(good)
    assert read_mammogram(tmp_path / "link.dcm").pixels.shape == (96, 72)


def test_dcmread_is_only_called_by_the_bounded_reader():
    """Every DICOM read of the package goes through `mammoseg.dicom.bounded.read_dicom`."""
    callers = {str(path.relative_to(SRC / "mammoseg")) for path in (SRC / "mammoseg").rglob("*.py")
               if "dcmread(" in path.read_text(encoding="utf-8")}
    assert callers == {"dicom/bounded.py"}, callers


# --------------------------------------------------------------------------- 3. codestreams checked before decoding


def j2k_codestream(rows: int, columns: int, bits: int = 16) -> bytes:
    """A valid JPEG 2000 codestream of `rows` × `columns` whose one code-block is empty: 82 bytes
    that openjpeg decodes into a full image (10000 × 10000: +600 MB)."""
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, columns, rows, 0, 0, columns, rows, 0, 0, 1) + bytes([bits - 1, 1, 1])
    cod = struct.pack(">HHBBHBBBBBB", 0xFF52, 12, 0, 0, 1, 0, 0, 4, 4, 0, 1)  # 1 layer, no DWT, 64×64 blocks
    qcd = struct.pack(">HHBB", 0xFF5C, 4, 0x40, (bits + 1) << 3)  # reversible, no quantisation
    body = b"\x00"  # one empty packet
    sot = struct.pack(">HHHIBB", 0xFF90, 10, 0, 12 + 2 + len(body), 0, 1)
    return b"\xff\x4f" + siz + cod + qcd + sot + b"\xff\x93" + body + b"\xff\xd9"


def compressed_file(path: Path, codec: str, patch=None) -> Path:
    """An MG image compressed as `codec` by a real encoder; `patch(frame) -> frame` edits its codestream."""
    if codec == "JPEG":
        pixels = (breast() // 16).astype(np.uint8)
        ds = mg_dataset(pixels, WindowCenter=128, WindowWidth=256)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
        frame, syntax = buffer.getvalue(), JPEGBaseline8Bit
    else:
        ds = mg_dataset(breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
        syntax = {"JPEG-LS": JPEGLSLossless, "JPEG 2000": JPEG2000Lossless, "RLE": RLELossless}[codec]
        ds.compress(syntax)
        frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    if patch is not None:
        frame = patch(frame)
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = syntax
    return save_dataset(ds, path)


def patch_sof(marker: bytes, rows: int, columns: int):
    """Write `rows` × `columns` into a JPEG / JPEG-LS frame header (SOFn: FFxx, Lf, P, Y, X)."""
    def patch(frame: bytes) -> bytes:
        at = frame.index(marker)
        return frame[: at + 5] + struct.pack(">HH", rows, columns) + frame[at + 9 :]
    return patch


def patch_siz(rows: int, columns: int):
    """Write `rows` × `columns` into a JPEG 2000 SIZ marker (Xsiz, Ysiz)."""
    def patch(frame: bytes) -> bytes:
        at = frame.index(b"\xff\x51")
        return frame[: at + 6] + struct.pack(">II", columns, rows) + frame[at + 14 :]
    return patch


def rle_bomb(frame: bytes) -> bytes:
    """One RLE segment of 2-byte runs that each repeat a byte 128 times: 64× its length."""
    return struct.pack("<16I", 2, 64, 64 + 20_000, *[0] * 13) + b"\x81\x00" * 10_000 + b"\x81\x00" * 10_000


@pytest.mark.parametrize("codec", ["JPEG", "JPEG-LS", "JPEG 2000", "RLE"])
def test_real_codestreams_of_the_header_size_decode(tmp_path, codec):
    """The check lets every real encoder's output through, to the same pixels as before."""
    path = compressed_file(tmp_path / "ok.dcm", codec)
    image = read_mammogram(path).pixels
    assert image.shape == (96, 72) and len(np.unique(image)) >= 3


@pytest.mark.parametrize(("codec", "patch", "message"), [
    ("JPEG", patch_sof(b"\xff\xc0", 9000, 9000),
     "the JPEG codestream is 9000 × 9000 with 1 component(s): 81.0 Mpx exceeds the 60 Mpx limit"),
    ("JPEG", patch_sof(b"\xff\xc0", 97, 72),
     "the JPEG codestream is 97 × 72 with 1 component(s), but the DICOM header says Rows × Columns 96 × 72"),
    ("JPEG", patch_sof(b"\xff\xc0", 0, 72), "JPEG frame header with a height or width of 0"),
    ("JPEG-LS", patch_sof(b"\xff\xf7", 4000, 4000),
     "the JPEG-LS codestream is 4000 × 4000 with 1 component(s), but the DICOM header says Rows × Columns 96 × 72"),
    ("JPEG 2000", patch_siz(10000, 10000),
     "the JPEG 2000 codestream is 10000 × 10000 with 1 component(s): 100.0 Mpx exceeds the 60 Mpx limit"),
    ("JPEG 2000", lambda frame: frame[:2] + frame[4:], "no JPEG 2000 SOC and SIZ markers"),
    ("RLE", lambda frame: struct.pack("<I", 15) + frame[4:], "the RLE header has 15 segment(s), but 1 sample(s) of 16 bits need 2"),
    ("RLE", rle_bomb, "RLE segment 1 decodes to more than 13824 bytes"),
])
def test_codestream_that_disagrees_with_the_header_is_not_decoded(tmp_path, codec, patch, message):
    path = compressed_file(tmp_path / "x.dcm", codec, patch)
    with pytest.raises(DicomReadError) as info:
        read_mammogram(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


@pytest.mark.timeout(300)
def test_jpeg2000_of_another_size_is_refused_before_decoding_by_prepare(tmp_path):
    """An 82-byte JPEG 2000 codestream of 10000 × 10000 under a 64 × 64 header: prepare refuses it
    into errors.csv, with the peak memory of a run that prepares a good image of that size."""
    ds = mg_dataset(breast(64, 64), bits_stored=12, WindowCenter=2048, WindowWidth=4096, PatientID="p1")
    ds.compress(JPEG2000Lossless)
    good = save_dataset(ds, tmp_path / "src" / "good.dcm")
    ds.PixelData = encapsulate([j2k_codestream(10000, 10000)])
    hostile = save_dataset(ds, tmp_path / "src" / "hostile.dcm")
    assert hostile.stat().st_size < 3000
    peaks = {}
    for name in ("good", "hostile"):
        src = tmp_path / f"src_{name}"
        src.mkdir()
        shutil.copy(tmp_path / "src" / f"{name}.dcm", src / f"{name}.dcm")
        (src / "list.csv").write_text(f"image,mask,patient_id\n{name}.dcm,,p1\n")
        rc, peaks[name], _ = run_measured(["prepare", "--format", "manifest", "--src", str(src), "--size", "64",
                                           "--out", str(tmp_path / f"out_{name}"), "--no-progress"])
        assert rc == (0 if name == "good" else 1)
    (error,) = read_csv(tmp_path / "out_hostile" / "errors.csv")
    assert "JPEG 2000 codestream is 10000 × 10000" in error["reason"] and "not decoded" in error["reason"]
    assert peaks["hostile"] <= peaks["good"] + 64 * 1024, peaks  # decoding it would take +600 MB
    assert good.exists()


# --------------------------------------------------------------------------- 4. images without information


def _voi_lut(descriptor: list[int], data: list[int]) -> list[Dataset]:
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new(0x00283006, "US", data)  # LUT Data
    return [item]


NO_INFORMATION = {
    "padding": (dict(WindowCenter=2048, WindowWidth=4096, PixelPaddingValue=0, PixelPaddingRangeLimit=4095),
                "every pixel is Pixel Padding Value (Pixel Padding Value 0 to Range Limit 4095 covers the stored "
                "values 100..3000); there is no image; check the pixel padding"),
    "voi_lut_0_bits": (dict(VOILUTSequence=_voi_lut([4096, 0, 0], [0] * 4096)),
                       "every pixel has the same grey level (0 of 65535) after windowing (VOI LUT item 0, "
                       "LUT Descriptor 4096\\0\\0, vs stored values 100..3000); check the window / VOI LUT / pixel padding"),
    "voi_lut_0_entries": (dict(VOILUTSequence=_voi_lut([0, 5000, 16], [7, 65535])),
                          "every pixel has the same grey level (7 of 65535) after windowing (VOI LUT item 0, "
                          "LUT Descriptor 0\\5000\\16, vs stored values 100..3000); check the window / VOI LUT / "
                          "pixel padding"),
    "window_outside": (dict(WindowCenter=60000, WindowWidth=10),
                       "every pixel has the same grey level (0 of 65535) after windowing (window C/W 60000/10 vs "
                       "stored values 100..3000); check the window / VOI LUT / pixel padding"),
}


def _no_information_source(root: Path) -> Path:
    lines = ["image,mask,patient_id", "good.dcm,,pg"]
    write_mg(root / "good.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    for name, (attributes, _) in NO_INFORMATION.items():
        write_mg(root / f"{name}.dcm", breast(), bits_stored=12, **attributes)
        lines.append(f"{name}.dcm,,p_{name}")
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    return root


def test_prepare_refuses_images_without_information(tmp_path):
    src = _no_information_source(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["prepare", "--format", "manifest", "--src", str(src), "--out", str(out), "--size", "32",
                 "--no-progress"]) == 0
    assert [row["id"] for row in read_csv(out / "manifest.csv")] == ["good"]
    reasons = {Path(row["source_path"]).stem: row["reason"] for row in read_csv(out / "errors.csv")}
    assert sorted(reasons) == sorted(NO_INFORMATION)
    for name, (_, message) in NO_INFORMATION.items():
        assert reasons[name] == f"{src / name}.dcm: {message}"


@pytest.mark.parametrize("name", sorted(NO_INFORMATION))
def test_predict_refuses_images_without_information(tmp_path, tiny_run, name, caplog):
    src = _no_information_source(tmp_path / "src")
    out = tmp_path / "pred"
    rc = main(["predict", "--device", "cpu", "--run", str(tiny_run), "--input", str(src / f"{name}.dcm"),
               "--out", str(out), "--no-progress"])
    assert rc == 1
    assert any(f"skipped {src / name}.dcm" in r.getMessage() for r in caplog.records)
    assert read_csv(out / "predictions.csv") == [] and not list((out / "masks").glob("*.png"))
    (error,) = read_csv(out / "errors.csv")
    assert error["reason"].endswith(f"{src / name}.dcm: {NO_INFORMATION[name][1]}")


def test_a_marker_in_an_otherwise_blank_window_is_still_no_information(tmp_path):
    """A window that shows only a few bright marker pixels (below 0.1% of the image) is refused too."""
    pixels = breast()
    pixels[0:2, 0:3] = 4000  # a 6-pixel lead marker, the only pixels inside the window
    path = write_mg(tmp_path / "m.dcm", pixels, bits_stored=12, WindowCenter=3900, WindowWidth=100)
    with pytest.raises(DicomReadError, match=r"all but 6 of 6912 pixels have the same grey level \(0 of 65535\)"):
        read_mammogram(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return write_random_run(tmp_path_factory.mktemp("run"))


# --------------------------------------------------------------------------- 5. malformed window / LUT / padding


@pytest.mark.parametrize(("attributes", "message"), [
    (dict(VOILUTSequence=_voi_lut([4096, 0], list(range(4096)))),
     "VOI LUT Sequence item 0: LUT Descriptor 4096\\0 is not 3 integers (number of entries, first input value, "
     "bits per entry)"),
    (dict(VOILUTSequence=_voi_lut([4096], list(range(4096)))), "VOI LUT Sequence item 0: LUT Descriptor 4096 is not 3"),
    (dict(VOILUTSequence=_voi_lut([4096, 0, 40], list(range(4096)))),
     "LUT Descriptor 4096\\0\\40: 4096 entries of 40 bits; at most 65535 entries"),
    (dict(VOILUTSequence=_voi_lut([1, 0, 16], [1000])), "invalid VOI LUT Sequence item 0"),
    (dict(WindowCenter=("LO", "abc"), WindowWidth=100), "WindowCenter 'abc' is not a number"),
    (dict(WindowCenter=100, WindowWidth=0), "invalid window 0"),
    (dict(WindowCenter=2048, WindowWidth=4096, PixelPaddingValue=[0, 1]), "invalid Pixel Padding Value"),
    (dict(RescaleSlope=("LO", "x")), "RescaleSlope 'x' is not a number"),
    (dict(VOILUTSequence=("LO", "abc")), "malformed header (AttributeError: "),
])
def test_malformed_window_lut_and_padding_are_one_line(tmp_path, attributes, message):
    """(VR, value) pairs are written as given, past pydicom's own checks, as a broken writer would."""
    ds = mg_dataset(breast(), bits_stored=12, **{k: v for k, v in attributes.items() if not isinstance(v, tuple)})
    for keyword, (vr, value) in ((k, v) for k, v in attributes.items() if isinstance(v, tuple)):
        ds.add_new(pydicom.datadict.tag_for_keyword(keyword), vr, value)
    path = save_dataset(ds, tmp_path / "bad.dcm")
    with pytest.raises(DicomReadError) as info:
        read_mammogram(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_malformed_lut_descriptor_goes_to_errors_csv(tmp_path):
    src = tmp_path / "src"
    write_mg(src / "good.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    write_mg(src / "bad.dcm", breast(), bits_stored=12, VOILUTSequence=_voi_lut([4096, 0], list(range(4096))))
    (src / "list.csv").write_text("image,mask,patient_id\ngood.dcm,,a\nbad.dcm,,b\n")
    out = tmp_path / "out"
    assert main(["prepare", "--format", "manifest", "--src", str(src), "--out", str(out), "--size", "32",
                 "--no-progress"]) == 0
    (error,) = read_csv(out / "errors.csv")
    assert error["reason"].endswith(f"{src / 'bad.dcm'}: VOI LUT Sequence item 0: LUT Descriptor 4096\\0 is not 3 "
                                    "integers (number of entries, first input value, bits per entry)")


# --------------------------------------------------------------------------- 2. checkpoints bounded


def deflated_copy(source: Path, target: Path) -> Path:
    """The zip archive `source` with every member deflated (torch.load reads it as before)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            with zin.open(info) as member, zout.open(info.filename, "w") as copy:
                shutil.copyfileobj(member, copy, 1 << 20)
    return target


@pytest.mark.timeout(120)
def test_a_deflated_checkpoint_is_refused_before_torch_inflates_it(tmp_path):
    stored = tmp_path / "stored.pt"
    torch.save({"format": "mammoseg-fold", "padding": torch.zeros(100 * 2**20, dtype=torch.uint8)}, stored)
    bomb = deflated_copy(stored, tmp_path / "bomb.pt")
    stored.unlink()
    assert bomb.stat().st_size < 300_000
    # torch reads it: the 100 MB would be allocated
    assert torch.load(bomb, weights_only=True)["padding"].numel() == 100 * 2**20
    with pytest.raises(ValueError) as info:
        read_checkpoint(bomb)
    size_mb = bomb.stat().st_size / 2**20
    assert str(info.value) == (f"{bomb}: checkpoint would inflate beyond {(64 * bomb.stat().st_size + 64 * 2**20) / 2**20:.0f}"
                               f" MB from a {size_mb:.1f} MB file (at most 64× its size + 64 MB); not loaded")


def _declare_member_size(path: Path, name: str, size: int) -> None:
    """Rewrite the uncompressed size the archive's central directory declares for member `name`."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if bytes(data[at + 46 : at + 46 + name_length]).decode() == name:
            struct.pack_into("<I", data, at + 24, size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def test_checkpoint_members_and_formats_are_checked(tmp_path):
    # a member declaring 3 GiB is refused from the archive's directory alone
    huge = tmp_path / "huge.pt"
    torch.save({"format": "mammoseg-fold", "w": torch.zeros(4)}, huge)
    member = next(i.filename for i in zipfile.ZipFile(huge).infolist() if i.filename.endswith("data/0"))
    _declare_member_size(huge, member, 3 * 2**30)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(huge))}: checkpoint member '{re.escape(member)}' would "
                                         r"inflate to 3072 MB, more than the 2048 MB a member may; not loaded$"):
        read_checkpoint(huge)
    # the legacy (non-zip) torch format is not read
    legacy = tmp_path / "legacy.pt"
    torch.save({"format": "mammoseg-fold"}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(legacy))}: not a mammoseg checkpoint: not a zip archive"):
        read_checkpoint(legacy)
    # a pickle that needs code to load: one line, not torch's advice
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "mammoseg-fold", "args": argparse.Namespace(lr=1e-3)}, pickled)
    with pytest.raises(ValueError) as info:
        read_checkpoint(pickled)
    assert str(info.value) == (f"{pickled}: not a mammoseg checkpoint: it needs arbitrary code to load (pickle); "
                               "mammoseg loads weights only")


def test_predict_refuses_a_pickled_fold_in_one_line(tmp_path, capsys):
    run = write_random_run(tmp_path / "run")
    fold1 = RunLayout(run).fold(1).best
    torch.save({"format": "mammoseg-fold", "args": argparse.Namespace(lr=1e-3)}, fold1)
    image = write_mg(tmp_path / "x.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    assert main(["predict", "--device", "cpu", "--run", str(run), "--input", str(image), "--out",
                 str(tmp_path / "pred")]) == 2
    assert error_line(capsys) == (f"mammoseg predict: error: {fold1}: not a mammoseg checkpoint: it needs arbitrary "
                                  "code to load (pickle); mammoseg loads weights only")
    assert not (tmp_path / "pred").exists()


# --------------------------------------------------------------------------- 6. folds checked against the run


def _replace_fold(run: Path, fold: int, spec: dict, norm: dict) -> Path:
    torch.manual_seed(fold)
    model = build_model(spec["encoder"], spec["decoder"], in_channels=spec["in_channels"])
    path = RunLayout(run).fold(fold).best
    save_checkpoint(path, model, spec, norm, {"name": "test"}, image_size=64, fold=fold, epoch=1, val_loss=0.5)
    return path


@pytest.mark.parametrize(("spec", "norm", "message"), [
    ({**SPEC, "encoder": "resnet34", "in_channels": 3}, {"mean": 0.3, "std": 0.2},
     "trained as resnet34-unet, but the run's config.yaml says resnet22-unet"),
    ({**SPEC, "in_channels": 3}, {"mean": 0.3, "std": 0.2},
     "trained as resnet22-unet with 3 input channels, but the run's config.yaml says resnet22-unet with 1 input channel"),
    ({**SPEC, "decoder": "fpn"}, {"mean": 0.3, "std": 0.2},
     "trained as resnet22-fpn, but the run's config.yaml says resnet22-unet"),
    (SPEC, {"mean": float("nan"), "std": 0.2},
     "normalisation mean nan, std 0.2: a finite mean and a finite positive std are needed; the checkpoint is damaged"),
    (SPEC, {"mean": 0.3, "std": float("inf")}, "normalisation mean 0.3, std inf: a finite mean and a finite positive std are needed; the checkpoint is damaged"),
    (SPEC, {"mean": 0.3, "std": 0.0}, "normalisation mean 0.3, std 0.0: a finite mean and a finite positive std are needed; the checkpoint is damaged"),
])
def test_predict_refuses_a_fold_that_is_not_the_runs(tmp_path, capsys, spec, norm, message):
    run = write_random_run(tmp_path / "run", folds=(0, 1, 2))
    fold2 = _replace_fold(run, 2, spec, norm)
    image = write_mg(tmp_path / "x.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    args = ["predict", "--device", "cpu", "--run", str(run), "--input", str(image), "--out", str(tmp_path / "pred")]
    assert main(args) == 2
    assert error_line(capsys) == f"mammoseg predict: error: {fold2}: {message}"
    assert not (tmp_path / "pred").exists()


def test_predict_needs_the_runs_config(tmp_path, capsys):
    run = write_random_run(tmp_path / "run")
    image = write_mg(tmp_path / "x.dcm", breast(), bits_stored=12, WindowCenter=2048, WindowWidth=4096)
    args = ["predict", "--device", "cpu", "--run", str(run), "--input", str(image), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # the run as written: predicted
    (run / "config.yaml").unlink()
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    assert error_line(capsys).startswith(f"mammoseg predict: error: {run / 'config.yaml'}: no such file; the fold "
                                         "checkpoints cannot be checked against the run without it")
