"""Run a DICOM node: mammograms pushed with C-STORE are segmented, SEG and SR sent back with C-STORE.

    mammoseg listen --run RUN --ae-title MAMMOSEG --port 11112 --out DIR
                    [--forward AE@host:port] [--allow AE ...] [--host 127.0.0.1] [--device auto]

The node answers C-ECHO and C-STORE on --port (bound to --host only); it writes received/, masks/,
seg/, sr/ and errors.csv under --out and, with --forward, sends each SEG and SR to that node. Every
image and send is journaled, so a restart with the same --out resumes: nothing received is lost,
nothing done is repeated. SIGTERM (or Ctrl-C) finishes the images in flight and exits 0.
docs/dicom.md, "DICOM node".
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mammoseg.commands.options import add_device_argument, add_overwrite_argument

#: How long a stopping node waits for the associations open at SIGTERM to finish sending.
ASSOCIATION_GRACE_S = 30.0

if TYPE_CHECKING:
    from mammoseg.inference.node import Node


def _ae(text: str) -> str:
    from mammoseg.inference.forward import ae_title

    try:
        return ae_title(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _destination(text: str) -> object:
    from mammoseg.inference.forward import Destination

    try:
        return Destination.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}")
    return int(text)


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run folder, model bundle (.mseg) or installed model name")
    parser.add_argument("--out", required=True, type=Path, help="node folder (received/, masks/, seg/, sr/, journal)")
    parser.add_argument("--ae-title", type=_ae, default="MAMMOSEG", help="this node's AE title (default MAMMOSEG)")
    parser.add_argument("--port", type=_port, default=11112, help="port to listen on (default 11112)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    parser.add_argument("--allow", nargs="+", type=_ae, default=[], metavar="AE",
                        help="calling AE titles accepted (default: any)")
    parser.add_argument("--forward", type=_destination, default=None, metavar="AE@HOST:PORT",
                        help="send each SEG and SR to this node with C-STORE")
    parser.add_argument("--threshold", type=float, default=None,
                        help="mask threshold (default: a bundle's published one, else the run's chosen one in "
                             "postprocessing.json, else 0.5); the run's component rules still apply")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help="leave out the run's chosen post-processing (every component, threshold 0.5 by default)")
    parser.add_argument("--queue-size", type=_positive(int), default=8,
                        help="images waiting for prediction before C-STORE answers wait (default 8)")
    parser.add_argument("--retries", type=_positive(int), default=5, help="tries per send (default 5)")
    parser.add_argument("--retry-wait", type=_positive(float), default=1.0,
                        help="seconds before the second try, doubling up to 30 (default 1)")
    add_device_argument(parser)
    add_overwrite_argument(parser, "what an earlier listen wrote into --out (received images included)")


def run(args: argparse.Namespace) -> int:
    from mammoseg.bundle.store import resolve_model
    from mammoseg.folders import open_output_folder
    from mammoseg.inference.forward import RetryPolicy, require_pynetdicom
    from mammoseg.inference.node import Node, NodeSettings, listen_outputs
    from mammoseg.inference.segmenter import Segmenter

    require_pynetdicom()  # before the folder is made or the models loaded
    folder = open_output_folder(args.out, "listen", inputs=[args.run] if Path(args.run).exists() else [],
                                owned=listen_outputs(), overwrite=args.overwrite, resume=True)
    try:
        segmenter = Segmenter.from_run(args.run, device=args.device, threshold=args.threshold,
                                       postprocessing=not args.no_postprocessing)
        settings = NodeSettings(args.out, args.ae_title, args.host, args.port, tuple(args.allow), args.forward,
                                args.queue_size, RetryPolicy(args.retries, args.retry_wait))
        node = Node(settings, segmenter, Path(resolve_model(args.run).run_dir))
        _serve(node)
    finally:
        folder.close()
    return 0


def _serve(node: Node) -> None:
    """Listen until SIGTERM or SIGINT, then finish the work in flight."""
    from mammoseg.inference.node import start_server

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = start_server(node)  # first: a port in use is reported before anything runs
    resumed = node.start()
    settings = node.settings
    print(f"listening as {settings.ae_title} on {settings.host}:{settings.port}; results in {settings.out}"
          + (f", sent to {settings.destination}" if settings.destination else "")
          + (f"; {resumed} left by an earlier run resumed" if resumed else ""), flush=True)
    while not stop.wait(0.5):
        pass
    print("stopping: finishing the images in flight", flush=True)
    server.shutdown()  # no new associations; those open finish their C-STOREs (the worker keeps draining)
    deadline = time.monotonic() + ASSOCIATION_GRACE_S
    while server.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.1)
    node.stop()
