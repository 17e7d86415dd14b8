"""A new user's first hour: every command checks its input before writing anything, every command
reads the same flags, and the config keys can be found without reading the source.

Runs the real commands (`mammoseg.cli.main`) on phantoms from `mammoseg synth` prepared at 128 px
and on random-weight runs (`run_factory`); bad input must be one line, exit 2, and leave no --out.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mammoseg.cli import build_parser, main
from mammoseg.config import load_config, save_config
from mammoseg.io import read_csv
from mammoseg.layouts import RunLayout

from prepared_factory import make_prepared
from run_factory import write_random_run

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: Tiny but real training: 2 folds of one epoch each at 64 px crops.
TINY = ["n_folds=2", "crop_size=64", "batch_size=2", "num_workers=0", "norm_samples=2", "cache_images=false",
        "epochs.combo=1", "epochs.focal_tversky=0"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class World:
    """What a new user has after the README's first steps: phantoms, a prepared folder, a run with its
    holdout predicted and evaluated."""

    root: Path
    synth: Path
    prepared: Path
    run: Path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("first_hour")
    synth, prepared = root / "synth", root / "prep128"
    assert main(["synth", "--out", str(synth), "--patients", "3", "--shape", "128x96"]) == 0
    assert main(["prepare", "--format", "manifest", "--src", str(synth), "--out", str(prepared), "--size", "128",
                 "--no-progress"]) == 0
    run = write_random_run(root / "run", image_size=64)
    save_config(load_config("demo", ["n_folds=2"]), RunLayout(run).config)
    layout = RunLayout(run)
    assert main(["predict", "--run", str(run), "--input", str(prepared), "--split", "holdout", "--out",
                 str(layout.holdout_pred), "--device", "cpu", "--no-progress"]) == 0
    assert main(["evaluate", "--pred", str(layout.holdout_pred), "--data", str(prepared),
                 "--out", str(layout.eval)]) == 0
    return World(root, synth, prepared, run)


# --------------------------------------------------------------------------- 1. nothing written before the checks


def _bad_inputs(w: World, out: Path) -> dict[str, tuple[list[str], str]]:
    """command → (a command line with one bad input writing into `out`, what its error line must say)."""
    notes = w.root / "notes.txt"
    notes.write_text("not an image\n")
    corrupt = w.root / "corrupt.p"
    corrupt.write_bytes(b"not a torch file")
    header_only = w.root / "header_only.csv"
    header_only.write_text("image,mask,patient_id\n")
    data, run = str(w.prepared), str(w.run)
    train = ["train", "--config", "demo", "--data", data, "--out", str(out), "--no-progress", *TINY]
    return {
        "train-crop": ([*train, "crop_size=256"], "'crop_size': 256 is larger than the prepared images (128 px)"),
        "train-weights-missing": ([*train, "model.encoder_weights=gmic:/nonexistent/sample_model_1.p"],
                                  "/nonexistent/sample_model_1.p: weights file not found"),
        "train-weights-corrupt": ([*train, f"model.encoder_weights=gmic:{corrupt}"],
                                  "cannot be read as a PyTorch weights file"),
        "train-folds": ([*train, "n_folds=3"], "2 patient(s) in the train split cannot fill 3 patient-grouped folds"),
        "predict-missing": (["predict", "--run", run, "--input", str(w.root / "nowhere"), "--out", str(out)],
                            "nowhere: no such file or folder"),
        "predict-not-dicom": (["predict", "--run", run, "--input", str(notes), "--out", str(out)],
                              "notes.txt: not a DICOM file"),
        "predict-fold": (["predict", "--run", run, "--input", data, "--out", str(out), "--folds", "0,3"],
                         "fold 3 has no best.pt"),
        "evaluate": (["evaluate", "--pred", str(RunLayout(w.run).holdout_pred), "--data", data, "--split", "train",
                      "--out", str(out)], "no prediction for 8 of 8 images"),
        "report": (["report", run, "--data", str(w.root / "nowhere"), "--out", str(out)],
                   "nowhere: no such folder (--data)"),
        "view": (["view", str(RunLayout(w.run).holdout_pred), "--data", str(w.synth), "--out", str(out)],
                 "manifest.csv: missing column(s)"),
        "prepare": (["prepare", "--format", "manifest", "--src", str(header_only), "--out", str(out), "--no-progress"],
                    "lists no images"),
        "synth": (["synth", "--out", str(out), "--patients", "1", "--shape", "64x1000"], "aspect ratio beyond 5:1"),
        "reproduce": (["reproduce", "--data", data, "--out", str(out), "--models", "resnet22-unet", "n_folds=2",
                       "crop_size=256"], "'crop_size': 256 is larger than the prepared images (128 px)"),
        "export": (["export", "--run", run, "--fold", "0", "--opset", "9", "--out", str(out / "model.onnx")],
                   "--opset 9: this installation exports opsets 10 to"),
    }


BAD_INPUT_CASES = ["train-crop", "train-weights-missing", "train-weights-corrupt", "train-folds", "predict-missing",
                   "predict-not-dicom", "predict-fold", "evaluate", "report", "view", "prepare", "synth", "reproduce",
                   "export"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", BAD_INPUT_CASES)
def test_bad_input_is_one_line_exit_2_and_leaves_no_output_folder(world, tmp_path, capsys, case):
    if case == "export":
        pytest.importorskip("onnx")
    out = tmp_path / "fresh"
    argv, expected = _bad_inputs(world, out)[case]
    before = tree(world.root)
    capsys.readouterr()
    assert main(argv) == 2
    assert expected in one_line_error(capsys)
    assert not out.exists()
    assert tree(world.root) == before  # the inputs are untouched


@pytest.mark.timeout(300)
def test_train_refused_then_fixed_trains_says_where_and_what_next(world, tmp_path, capsys, caplog):
    out = tmp_path / "runs" / "x"
    base = ["train", "--config", "demo", "--data", str(world.prepared), "--out", str(out), "--device", "cpu",
            "--no-progress", *TINY]
    assert main([*base, "crop_size=256"]) == 2
    assert "'crop_size': 256 is larger than the prepared images (128 px)" in one_line_error(capsys)
    assert not out.exists()
    caplog.clear()
    assert main(base) == 0  # the corrected command: no "already holds a run with a different config"
    printed = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(rf"trained 2 fold\(s\) into {re.escape(str(out))}; best val Dice: "
                        r"fold 0 \d\.\d{4} \(epoch 1\), fold 1 \d\.\d{4} \(epoch 1\)", printed[-3]), printed
    assert re.fullmatch(r"post-processing chosen on \d+ out-of-fold images: threshold 0\.\d+, .*; "
                        r"OOF mean Dice \d\.\d{4} -> \d\.\d{4}", printed[-2]), printed
    assert printed[-1] == (f"next: mammoseg predict --run {out} --input {world.prepared} --split holdout "
                           f"--out {out / 'holdout_pred'}")
    milestones = [r.getMessage() for r in caplog.records if "lr_milestones" in r.getMessage()]
    assert milestones == ["lr_milestones 54, 60 lie past the last epoch (1): the learning rate never decays; "
                          "set lr_milestones=[...] to match the epochs"]
    assert [f.fold for f in RunLayout(out).folds() if f.best.is_file()] == [0, 1]


@pytest.mark.timeout(120)
def test_predict_with_one_usable_input_lists_the_rest_in_errors_csv_without_a_python_warning(world, tmp_path,
                                                                                               caplog, recwarn):
    out = tmp_path / "pred"
    missing = world.root / "nowhere"
    assert main(["predict", "--run", str(world.run), "--input", str(missing), str(world.prepared), "--split",
                 "holdout", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    errors = [(e["input"], e["reason"]) for e in read_csv(out / "errors.csv")]
    assert errors == [(str(missing), "no such file or folder")]
    assert len(read_csv(out / "predictions.csv")) == 4
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")] == \
        [f"skipped {missing}: no such file or folder"]
    assert not [w for w in recwarn if "skipped" in str(w.message)]


@pytest.mark.timeout(120)
def test_predict_after_a_refused_command_the_correct_one_runs(world, tmp_path, capsys):
    out = tmp_path / "p"
    assert main(["predict", "--run", str(world.run), "--input", str(world.root / "nowhere"), "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["predict", "--run", str(world.run), "--input", str(world.prepared), "--split", "holdout", "--out",
                 str(out), "--device", "cpu", "--no-progress"]) == 0


# --------------------------------------------------------------------------- 2. one grammar


@pytest.mark.timeout(60)
def test_verbose_before_or_after_the_subcommand_shows_the_traceback(tmp_path, capsys):
    argv = ["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    capsys.readouterr()
    for verbose in (["-v", *argv], [*argv, "-v"], [*argv[:1], "--verbose", *argv[1:]]):
        with pytest.raises(FileNotFoundError, match="no such folder"):
            main(verbose)  # -v re-raises: the traceback is shown
    assert not (tmp_path / "r").exists()


DEVICE_COMMANDS = {
    "train": ["train", "--print-config"],
    "predict": ["predict", "--out", "p"],
    "reproduce": ["reproduce", "--data", "d", "--out", "o"],
    "demo": ["demo", "--out", "o"],
    "listen": ["listen", "--run", "r", "--out", "o"],
}


@pytest.mark.parametrize("command", sorted(DEVICE_COMMANDS))
def test_every_device_flag_takes_the_same_checked_choices(command, capsys):
    from mammoseg.commands.options import torch_has_mps

    parser = build_parser()
    argv = DEVICE_COMMANDS[command]
    assert parser.parse_args(argv).device == "auto"
    for good in ("auto", "cpu", "cuda", "cuda:0", "cuda:3", *(["mps"] if torch_has_mps() else [])):
        assert parser.parse_args([*argv, "--device", good]).device == good
    for bad in ("gpu", "cuda:", "cuda:x", "cpu0", "tpu"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([*argv, "--device", bad])
        assert exit_.value.code == 2
        assert f"{bad!r} is not a device; expected auto, cpu, cuda" in capsys.readouterr().err


def test_mps_is_offered_exactly_when_this_torch_has_it_and_parsing_does_not_import_torch(tmp_path):
    import torch

    code = ("import sys; from mammoseg.cli import build_parser; from mammoseg.commands.options import device_choices; "
            "a = build_parser().parse_args(['predict', '--out', 'p', '--device', 'cuda:1']); "
            "print(a.device, ','.join(device_choices()), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    has_mps = hasattr(getattr(torch.backends, "mps", None), "is_available")
    assert result.stdout.split() == ["cuda:1", "auto,cpu,cuda" + (",mps" if has_mps else ""), "False"]


def test_a_device_this_machine_lacks_is_bad_input_naming_it():
    import torch

    from mammoseg.distributed import resolve_device

    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="--device cuda:3 was asked for, but CUDA is not available"):
            resolve_device("cuda:3")
    if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        with pytest.raises(ValueError, match="--device mps was asked for, but MPS is not available"):
            resolve_device("mps")


#: Commands that show progress bars (--no-progress) and commands that write (--overwrite).
PROGRESS = ("synth", "prepare", "train", "predict", "evaluate", "view", "reproduce", "demo")
WRITES = (*PROGRESS, "report", "export")


@pytest.mark.parametrize("command", WRITES)
def test_every_command_that_writes_takes_overwrite_and_every_one_with_progress_no_progress(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    usage = capsys.readouterr().out
    assert "--overwrite" in usage
    assert ("--no-progress" in usage) == (command in PROGRESS)
    assert "-v, --verbose" in usage


@pytest.mark.parametrize("argv, meant", [
    (["predict", "--run", "r", "--in", "x", "--out", "p"], "--input"),
    (["train", "--print-config", "--conf", "demo"], "--config"),
    (["evaluate", "--pred", "p", "--data", "d", "--out", "e", "--over"], "--overwrite"),
])
def test_flags_are_never_abbreviated(argv, meant, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and f"did you mean {meant}" in err


@pytest.mark.timeout(120)
def test_report_refuses_its_own_earlier_report_without_overwrite_and_takes_run(world, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--run", str(world.run), "--out", str(out), "--data", str(world.prepared)]) == 0
    report = (out / "report.md").read_bytes()
    before = tree(out)
    (out / "report.md").write_text("edited by hand")  # whatever is there now must survive a refused run
    capsys.readouterr()
    assert main(["report", str(world.run), "--out", str(out), "--data", str(world.prepared)]) == 2
    assert "holds an earlier `mammoseg report` output; pass --overwrite" in one_line_error(capsys)
    assert (out / "report.md").read_text() == "edited by hand"
    assert main(["report", "--run", str(world.run), "--out", str(out), "--data", str(world.prepared),
                 "--overwrite"]) == 0
    assert (out / "report.md").read_bytes() == report and tree(out) == before


@pytest.mark.timeout(120)
def test_view_takes_run_as_a_flag_like_the_other_commands(world, tmp_path, capsys):
    by_flag, by_position = tmp_path / "flag", tmp_path / "position"
    assert main(["view", "--run", str(world.run), "--out", str(by_flag), "--no-progress"]) == 0
    assert main(["view", str(world.run), "--out", str(by_position), "--no-progress"]) == 0
    assert {k for k in tree(by_flag)} == {k for k in tree(by_position)} and (by_flag / "index.html").is_file()
    capsys.readouterr()
    assert main(["view", str(world.run), "--run", str(world.run), "--out", str(tmp_path / "both")]) == 2
    assert "give one folder to view" in one_line_error(capsys)


@pytest.mark.timeout(180)
def test_predict_folds_subset_equals_a_run_of_those_folds_and_is_kept_on_resume(world, tmp_path, capsys):
    three = write_random_run(tmp_path / "three", folds=(0, 1, 2), image_size=64)
    two = tmp_path / "two"
    for k in (0, 2):
        shutil.copytree(three / f"fold{k}", two / f"fold{k}")
    shutil.copy2(three / "config.yaml", two / "config.yaml")  # predict checks every fold against it
    common = ["--input", str(world.prepared), "--split", "holdout", "--save-prob", "--device", "cpu", "--no-progress"]
    subset, reference = tmp_path / "subset", tmp_path / "reference"
    assert main(["predict", "--run", str(three), "--folds", "2,0", "--out", str(subset), *common]) == 0
    assert main(["predict", "--run", str(two), "--out", str(reference), *common]) == 0
    for name in sorted(p.name for p in (reference / "prob").iterdir()):
        assert (subset / "prob" / name).read_bytes() == (reference / "prob" / name).read_bytes(), name
        assert (subset / "masks" / name).read_bytes() == (reference / "masks" / name).read_bytes(), name
    settings = yaml.safe_load((subset / ".predict.json").read_text())["settings"]
    assert settings["folds"] == [0, 2] and [Path(c).parent.name for c in settings["checkpoints"]] == ["fold0", "fold2"]
    capsys.readouterr()
    assert main(["predict", "--run", str(three), "--folds", "0,1", "--out", str(subset), "--resume", *common]) == 2
    assert "other settings (checkpoints, folds)" in one_line_error(capsys)
    assert main(["predict", "--run", str(three), "--out", str(subset), "--resume", *common]) == 2  # all folds: other
    capsys.readouterr()
    stamps = {p.name: p.stat().st_mtime_ns for p in (subset / "masks").iterdir()}
    assert main(["predict", "--run", str(three), "--folds", "0,2", "--out", str(subset), "--resume", *common]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (subset / "masks").iterdir()} == stamps  # nothing redone


@pytest.mark.timeout(120)
def test_predict_progress_has_a_total_for_prepared_folders_and_a_count_for_dicom_folders(world, tmp_path, capsys):
    assert main(["predict", "--run", str(world.run), "--input", str(world.prepared), "--split", "holdout",
                 "--out", str(tmp_path / "a"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"predict: 100%\|[^|]*\| 4/4 \[", err), err  # a total, so a percentage and an ETA
    dicoms = tmp_path / "dicoms"
    shutil.copytree(world.synth / "images", dicoms)
    assert main(["predict", "--run", str(world.run), "--input", str(dicoms), "--out", str(tmp_path / "b"),
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"predict: 12img \[", err) and "%|" not in err, err  # streamed: a bare count


# --------------------------------------------------------------------------- 3. config discoverability


@pytest.mark.timeout(60)
def test_print_config_round_trips_writes_nothing_and_warns_about_unused_milestones(tmp_path, monkeypatch, capsys,
                                                                                   caplog):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--print-config", "--config", "demo", "epochs.combo=4", "batch_size=8"]) == 0
    printed = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # nothing written, no --data or --out needed
    expected = load_config("demo", ["epochs.combo=4", "batch_size=8"])
    assert yaml.safe_load(printed) == expected.to_dict()
    saved = tmp_path / "mine.yaml"
    saved.write_text(printed)
    assert load_config(saved) == expected
    assert main(["train", "--print-config", "--config", str(saved)]) == 0
    assert capsys.readouterr().out == printed
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["lr_milestones 54, 60 lie past the last epoch (32): the learning rate never decays; "
                        "set lr_milestones=[...] to match the epochs"] * 2


def test_unused_milestones_names_both_values_and_what_still_happens():
    from mammoseg.training.schedule import unused_milestones

    assert unused_milestones(load_config("paper")) is None
    assert unused_milestones(load_config("demo")) is None
    assert unused_milestones(load_config("paper", ["epochs.focal_tversky=30"])) == (
        "lr_milestones 50, 60 lie past the last epoch (50): the learning rate decays only after epoch 40; "
        "set lr_milestones=[...] to match the epochs")


def test_docs_config_lists_every_key_with_its_type_default_and_meaning():
    from mammoseg.config import config_reference_markdown

    page = (DOCS / "config.md").read_text(encoding="utf-8")
    assert config_reference_markdown() in page  # the generated table, current

    def dotted(tree: dict, prefix: str = "") -> list[str]:
        keys = []
        for key, value in tree.items():
            keys += dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]
        return keys

    keys = dotted(load_config("demo").to_dict())
    assert len(keys) == 31
    rows = {line.split("|")[1].strip().strip("`"): line for line in page.splitlines() if line.startswith("| `")}
    assert sorted(rows) == sorted(keys)
    assert "| `crop_size` | int | `448` | `224` |" in rows["crop_size"]
    assert "| `model.encoder_weights` | str or null | `imagenet` | `null` |" in rows["model.encoder_weights"]


@pytest.mark.timeout(120)
def test_train_summary_counts_folds_already_done(tmp_path, capsys):
    data = make_prepared(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--config", "demo", "--data", str(data), "--out", str(out), "--device", "cpu", "--no-progress",
            *TINY, "--folds", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 1 fold(s) into" in printed and "post-processing" not in printed  # chosen once every fold is
    assert main([*argv[:-1], "0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-3].startswith(f"trained 1 fold(s), 1 already done into {out}; best val Dice: fold 0 ")
    assert lines[-2].startswith("post-processing chosen on ")


def test_overrides_may_stand_between_flags_and_a_multi_line_error_is_one_line():
    from mammoseg.cli import one_line, parse_arguments

    args = parse_arguments(build_parser(), ["train", "--print-config", "batch_size=8", "--config", "demo",
                                            "epochs.combo=4", "-v"])
    assert (args.overrides, args.config, args.verbose) == (["batch_size=8", "epochs.combo=4"], "demo", True)
    assert one_line("SymbolicValueError: unsupported\n  File x.py, line 3\n") == \
        "SymbolicValueError: unsupported [...] (run with -v for the rest)"
    assert one_line("nowhere: no such file or folder") == "nowhere: no such file or folder"
