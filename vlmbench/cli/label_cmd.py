"""`vlmbench label`: the labelling page for a dataset, or the export of its people's labels."""

from __future__ import annotations

import socket
from pathlib import Path

import typer
from rich.markup import escape

from vlmbench.cli.output import make_console
from vlmbench.datasets.format import load_dataset, resolve_dataset
from vlmbench.datasets.render import FRAMES_DIR
from vlmbench.errors import VlmbenchError
from vlmbench.specs.catalogue import resolve_task

console = make_console()


def _free(host: str, port: int) -> None:
    """A one-line error unless ``port`` on ``host`` can be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise VlmbenchError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                            "pass another --port") from None


def label(
    dataset_name: str = typer.Option(..., "--dataset", "-d",
                                     help="a task id or alias (its shipped dataset), or a dataset file"),
    handle: str = typer.Option(None, "--handle", help="your name on the labels (the page asks if not given)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to serve on (default: this machine only)"),
    port: int = typer.Option(8765, "--port", min=1, max=65535),
    pairs: int = typer.Option(50, "--pairs", min=0, help="pairs of lone states to compare"),
    seed: int = typer.Option(0, "--seed", help="seed of the order of states and of the pairs"),
    labels_dir: Path = typer.Option(None, "--labels",
                                    help="folder of label files (default results/labels)"),
    frames_dir: Path = typer.Option(FRAMES_DIR, "--frames", help="frame cache folder"),
    export: Path = typer.Option(None, "--export",
                                help="write a copy of the dataset carrying --handle's state labels to this "
                                     ".parquet file, and serve nothing"),
    overwrite: bool = typer.Option(False, "--overwrite", help="with --export: replace an existing file"),
) -> None:
    """Serve a page where people label a dataset's states (goal / not goal / skip) and pairs of its
    states (which is closer to the goal) with the arrow keys; labels go to
    results/labels/<task>-<digest>.sqlite. With --export, save the dataset with those labels instead."""
    from vlmbench.web.labels import LABELS_DIR, LabelStore, check_handle, export_labels, store_path

    if handle is not None:
        check_handle(handle)
    dataset = load_dataset(resolve_dataset(dataset_name))
    task = resolve_task(dataset.task)
    store = LabelStore(store_path(dataset, labels_dir or LABELS_DIR), dataset)
    if export is not None:
        if export.suffix != ".parquet":
            raise VlmbenchError(f"--export {export}: a dataset file's name ends in .parquet")
        if export.exists() and not overwrite:
            raise VlmbenchError(f"{export} exists; pass --overwrite to replace it")
        if handle is None:
            labelled = sorted({label.handle for label in store.state_labels()})
            if len(labelled) != 1:
                raise VlmbenchError(f"{store.path}: {'no one has' if not labelled else 'several handles have'} "
                                    f"labelled states{': ' + ', '.join(labelled) if labelled else ''}; "
                                    "pass --handle to choose whose labels to export")
            handle = labelled[0]
        saved, count = export_labels(dataset, store, handle, export)
        console.print(f"saved {escape(str(saved.path))}: {count} of {len(saved.rows)} states labelled by "
                      f"{escape(handle)}")
        return
    _free(host, port)
    import uvicorn

    from vlmbench.web.app import create_app
    from vlmbench.web.dataset_labelling import DatasetSource

    app = create_app(DatasetSource(dataset, task, store, pairs=pairs, seed=seed, handle=handle, frames_dir=frames_dir))
    console.print(f"labelling {escape(str(dataset.path))} into {escape(str(store.path))}")
    console.print(f"open http://{host}:{port}/ (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
