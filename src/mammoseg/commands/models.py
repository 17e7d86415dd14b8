"""Installed models: `models install FILE [--name NAME]`, `models list`, `models show NAME|FILE`,
`models remove NAME`.

A bundle (`mammoseg export --bundle`) is verified — every member against the SHA-256 in its
manifest — and copied into the models folder ($MAMMOSEG_MODELS_DIR, else the user data folder:
platformdirs' when installed, else $XDG_DATA_HOME/mammoseg/models); `mammoseg predict --model
NAME` then uses it. `show` prints a bundle's MODEL_CARD.md.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = sub.add_parser("install", help="verify a .mseg bundle and install it under a name")
    install.add_argument("bundle", metavar="FILE", help="bundle written by `mammoseg export --bundle`")
    install.add_argument("--name", default=None, help="name to install it as (default: the run's name)")
    install.add_argument("--overwrite", action="store_true", help="replace an installed model of that name")
    sub.add_parser("list", help="installed models: name, bundle id, architecture, folds, image size")
    show = sub.add_parser("show", help="print a bundle's model card")
    show.add_argument("model", metavar="NAME|FILE", help="installed model name or bundle file")
    remove = sub.add_parser("remove", help="delete an installed model")
    remove.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mammoseg.bundle.archive import CARD_MD, read_bundle_member
    from mammoseg.bundle.store import install_model, installed_path, list_models, models_dir, remove_model

    if args.action == "install":
        model = install_model(args.bundle, args.name, overwrite=args.overwrite)
        print(f"installed {model.name} ({model.architecture}, {model.folds} fold(s), bundle {model.bundle_id}) as "
              f"{model.path}; use it with `mammoseg predict --model {model.name}`")
        return 0
    if args.action == "remove":
        print(f"removed {args.name} ({remove_model(args.name)})")
        return 0
    if args.action == "show":
        path = Path(args.model) if Path(args.model).is_file() else installed_path(args.model)
        print(read_bundle_member(path, CARD_MD).decode("utf-8"), end="")
        return 0
    models = list_models()
    if not models:
        print(f"no models installed in {models_dir()}")
        return 0
    broken = 0
    for model in models:
        if isinstance(model, tuple):
            broken += 1
            print(f"{model[0]}\tUNUSABLE: {model[2]}")
        else:
            print(f"{model.name}\t{model.bundle_id}\t{model.architecture}\t{model.folds} fold(s)\t"
                  f"{model.image_size} px\t{model.path}")
    return 1 if broken else 0
