"""Installed models: verified bundles kept by name in a user data folder, and what `--run`,
`--model` and `Segmenter.from_run` accept (a run folder, a bundle file or an installed name).

Why: a shared model should be usable as `predict --model r34-inbreast`, without anyone keeping
track of where its file lies. `mammoseg models install FILE` verifies the bundle and copies it to
`$MAMMOSEG_MODELS_DIR` if set, else the platform's user data folder (platformdirs when it is
installed), else `$XDG_DATA_HOME/mammoseg/models` (~/.local/share by default), as `<name>.mseg`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mammoseg.bundle.archive import (
    BUNDLE_SUFFIX,
    CARD_JSON,
    BundleError,
    BundleManifest,
    read_bundle_member,
    unpack_bundle,
    verify_bundle,
)
from mammoseg.io import atomic_path

MODELS_ENV = "MAMMOSEG_MODELS_DIR"
#: An installed model's name: a file name without separators or a leading dot.
MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,127}")


def models_dir() -> Path:
    """The folder of installed bundles (module docstring)."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    try:
        import platformdirs  # optional: the platform's own user data folder
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return Path(base) / "mammoseg" / "models"
    return Path(platformdirs.user_data_dir("mammoseg")) / "models"


def check_name(name: str) -> str:
    """The name, or a ValueError saying what a model name may be."""
    if not MODEL_NAME.fullmatch(name) or name.endswith(BUNDLE_SUFFIX):
        raise ValueError(f"{name!r}: not a model name (letters, digits, '.', '_', '+', '-'; no path, no "
                         f"{BUNDLE_SUFFIX} suffix)")
    return name


@dataclass(frozen=True)
class InstalledModel:
    """One installed bundle: its name, file and what its manifest and card say."""

    name: str
    path: Path
    bundle_id: str
    run_name: str
    architecture: str
    folds: int
    image_size: int | None


def install_model(bundle: str | os.PathLike, name: str | None = None, overwrite: bool = False) -> InstalledModel:
    """Verify `bundle` and copy it into `models_dir()` as NAME (default: the run's name)."""
    manifest = verify_bundle(bundle)
    name = check_name(name or manifest.run_name)
    target = models_dir() / f"{name}{BUNDLE_SUFFIX}"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: a model named {name!r} is installed (use --overwrite to replace it, "
                              "or --name to choose another name)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, durable=True) as tmp:
        shutil.copyfile(bundle, tmp)
    try:
        verify_bundle(target)  # the copy is what will be used
    except BundleError:
        target.unlink()
        raise
    return _describe(name, target, manifest)


def _describe(name: str, path: Path, manifest: BundleManifest) -> InstalledModel:
    card = json.loads(read_bundle_member(path, CARD_JSON).decode("utf-8"))
    model = card.get("model") if isinstance(card, dict) else {}
    contract = card.get("preprocessing") if isinstance(card, dict) else {}
    return InstalledModel(name, path, manifest.bundle_id, manifest.run_name,
                          str((model or {}).get("architecture", "?")), len(manifest.folds),
                          (contract or {}).get("image_size"))


def list_models() -> list[InstalledModel | tuple[str, Path, str]]:
    """Every installed model in name order; one that fails verification as (name, path, reason)."""
    folder = models_dir()
    found: list[InstalledModel | tuple[str, Path, str]] = []
    for path in sorted(folder.glob(f"*{BUNDLE_SUFFIX}")) if folder.is_dir() else []:
        name = path.name[: -len(BUNDLE_SUFFIX)]
        try:
            found.append(_describe(name, path, verify_bundle(path)))
        except (BundleError, OSError, ValueError) as exc:
            found.append((name, path, str(exc)))
    return found


def remove_model(name: str) -> Path:
    """Delete the installed model NAME (the copy `install_model` made); its path."""
    target = models_dir() / f"{check_name(name)}{BUNDLE_SUFFIX}"
    if not target.is_file():
        raise FileNotFoundError(f"{name}: no installed model of that name in {models_dir()} "
                                "(see `mammoseg models list`)")
    target.unlink()
    return target


def installed_path(name: str) -> Path:
    """The file of the installed model NAME; FileNotFoundError naming the models folder."""
    target = models_dir() / f"{check_name(name)}{BUNDLE_SUFFIX}"
    if not target.is_file():
        raise FileNotFoundError(f"{name}: no such run folder, bundle file or installed model (installed models "
                                f"are in {models_dir()}; see `mammoseg models list`)")
    return target


@dataclass(frozen=True)
class ModelSource:
    """Where a model came from, and the run folder that loads it."""

    run_dir: Path
    bundle: Path | None = None
    manifest: BundleManifest | None = None

    @property
    def threshold(self) -> float | None:
        """The threshold the bundle was published with (None for a run folder)."""
        return self.manifest.threshold if self.manifest is not None else None


def resolve_model(spec: str | os.PathLike) -> ModelSource:
    """A run folder as it is; a bundle file, or an installed model's name, verified and unpacked."""
    path = Path(spec)
    if path.is_dir():
        return ModelSource(path)
    bundle = path if path.is_file() else installed_path(str(spec)) if MODEL_NAME.fullmatch(str(spec)) else None
    if bundle is None:
        raise FileNotFoundError(f"{spec}: no such run folder or bundle file")
    run_dir, manifest = unpack_bundle(bundle)
    return ModelSource(run_dir, bundle, manifest)
