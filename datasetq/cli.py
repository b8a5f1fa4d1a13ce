"""The ``datasetq`` command line: ``datasetq demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .sampler import HeapqSampler, Policy
from .training import EpochStats, TrainConfig, train_mnist

if TYPE_CHECKING:
    from .server.server import BackgroundServer

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="datasetq", description=__doc__)
    parser.add_argument("--version", action="version", version=f"datasetq {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small CNN on the embedded MNIST data")
    demo.add_argument("--epochs", type=int, default=6)
    demo.add_argument("--noise", type=float, default=0.1, help="fraction of labels flipped")
    demo.add_argument(
        "--policy",
        choices=["balanced", "greedy"],
        default="balanced",
        help="the sampler's policy (greedy: the original largest loss first)",
    )
    demo.add_argument(
        "--max-visits", type=int, default=None, help="evict a sample drawn this often in an epoch"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--db", type=database_url, default="sqlite:///datasetq.db", help="where the run is recorded"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--no-serve", action="store_true", help="train and record only; do not serve the dashboard"
    )
    db = commands.add_parser("db", help="manage the store's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="create or migrate a database")
    upgrade.add_argument(
        "--db", type=database_url, required=True, help="database URL, e.g. sqlite:///datasetq.db"
    )
    serve = commands.add_parser("serve", help="serve the dashboard and the API")
    serve.add_argument("--db", type=database_url, default=None, help="database URL (DATASETQ_DB)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="PATH",
        help="a folder images may be read from (an ImageFolder's root); repeatable; adds to "
        "DATASETQ_DATA_ROOTS",
    )
    runs = commands.add_parser("runs", help="list the runs of a database")
    runs.add_argument(
        "--db", type=database_url, required=True, help="database URL, e.g. sqlite:///datasetq.db"
    )
    export = commands.add_parser("export", help="write a run's cleaned manifest")
    export.add_argument(
        "--db", type=database_url, required=True, help="database URL, e.g. sqlite:///datasetq.db"
    )
    export.add_argument("--run", required=True, help="the run's name or id")
    export.add_argument("--format", choices=["csv", "jsonl"], default="csv")
    export.add_argument(
        "--evicted",
        choices=["drop", "keep", "mark"],
        default="drop",
        help="samples the sampler evicted and nobody reviewed (default: drop)",
    )
    export.add_argument("-o", "--output", default="-", help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return run_serve(args.db, args.host, args.port, args.data_root)
    if args.command == "runs":
        from .commands import list_runs_command

        return list_runs_command(args.db)
    if args.command == "export":
        from .commands import export_command

        return export_command(args.db, args.run, args.format, args.evicted, args.output)
    if args.command == "demo":
        from .errors import StoreError

        try:
            return run_demo(
                args.epochs,
                args.noise,
                args.max_visits,
                args.seed,
                args.db,
                serve=None if args.no_serve else (args.host, args.port),
                policy=args.policy,
            )
        except StoreError as error:
            print(f"datasetq demo: {error}", file=sys.stderr)
            return 1
    if args.command == "db":
        return run_db_upgrade(args.db)
    return 2  # pragma: no cover - argparse rejects unknown commands


def database_url(text: str) -> str:
    """``--db``'s value, refused with a usage error (not a traceback) unless it is a URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(text)
    except ArgumentError:
        raise argparse.ArgumentTypeError(
            f"should be a database URL such as sqlite:///datasetq.db (a file: sqlite:///"
            f"{Path(text).as_posix()}), but got {text!r}"
        ) from None
    return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("datasetq")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        return "unknown"


def run_serve(url: str | None, host: str, port: int, data_roots: Sequence[str] = ()) -> int:
    """Serves the web app; a non-loopback host needs DATASETQ_TOKEN."""
    import os

    missing = missing_server_dependencies()
    if missing:
        print(f"datasetq serve: {missing}", file=sys.stderr)
        return 2
    import uvicorn

    from .errors import StoreError
    from .server.app import create_app
    from .server.settings import LOOPBACK_HOSTS, Settings

    overrides: dict[str, object] = {"host": host, "port": port}
    if url is not None:
        overrides["db"] = url
    settings = Settings(**overrides)  # type: ignore[arg-type]
    missing_roots = [root for root in data_roots if not os.path.isdir(root)]
    if missing_roots:
        print(f"datasetq serve: --data-root {missing_roots[0]} is not a folder", file=sys.stderr)
        return 2
    if data_roots:
        settings.data_roots = [*settings.data_roots, *(Path(r).resolve() for r in data_roots)]
    if host not in LOOPBACK_HOSTS and not settings.token:
        print(
            f"datasetq serve: refusing to listen on {host} without a token: set DATASETQ_TOKEN "
            "(write routes then need Authorization: Bearer <token>)",
            file=sys.stderr,
        )
        return 2
    try:
        app = create_app(settings)
    except StoreError as error:
        print(f"datasetq serve: {error}", file=sys.stderr)
        return 1
    print(f"datasetq: serving {settings.db} at http://{host}:{port}", flush=True)
    os.environ.setdefault("DATASETQ_DB", settings.db)
    # Open event streams end with the server: a stop takes at most this long.
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    return 0


def missing_server_dependencies() -> str | None:
    """None when the dashboard can run, else which packages it lacks and how to get them."""
    from importlib.util import find_spec

    needed = ("fastapi", "uvicorn", "pydantic_settings", "plotly", "PIL")
    missing = [name for name in needed if find_spec(name) is None]
    if not missing:
        return None
    return (
        f"the dashboard needs {', '.join(missing)}, which this install lacks: "
        "pip install 'datasetq[server]'"
    )


def run_db_upgrade(url: str) -> int:
    from .store.migrations import upgrade

    try:
        revision = upgrade(url)
    except Exception as error:
        print(f"datasetq db upgrade: {error}", file=sys.stderr)
        return 1
    print(f"{url}: schema at revision {revision}")
    return 0


def run_demo(
    epochs: int,
    noise: float,
    max_visits: int | None,
    seed: int,
    url: str,
    serve: tuple[str, int] | None = None,
    policy: Policy = "balanced",
) -> int:
    """Flips a seeded fraction of labels, trains with priority sampling while recording, and
    (with ``serve``) shows the dashboard during and after training, until Ctrl-C."""
    from datetime import UTC, datetime

    from .recorder import Recorder
    from .training import make_splits

    missing = missing_server_dependencies() if serve is not None else None
    if missing:
        print(f"datasetq demo: {missing}; or train only with --no-serve", file=sys.stderr)
        return 2
    if serve is not None and not _port_free(*serve):
        # Checked before the run exists: a demo that cannot serve leaves nothing behind.
        print(
            f"datasetq demo: {serve[0]}:{serve[1]} is in use; pick another with --port, or "
            "--no-serve",
            file=sys.stderr,
        )
        return 1
    config = TrainConfig(
        epochs=epochs,
        noise=noise,
        seed=seed,
        sampler_options={"max_visits": max_visits, "policy": policy},
    )
    splits = make_splits(config)
    train_set, _, flipped = splits
    print(
        f"datasetq demo: small CNN on {config.train_size} embedded MNIST digits, "
        f"{noise:.0%} labels flipped, {policy} priority sampling"
        + (f" with max_visits={max_visits}" if max_visits is not None else "")
    )
    run_name = f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    run_config = {
        "model": "SmallCNN",
        "epochs": epochs,
        "noise": noise,
        "max_visits": max_visits,
        "policy": policy,
        "seed": seed,
        "flipped": flipped.tolist(),  # ground truth: which training labels were flipped
    }
    server = None
    # The demo is watched live: the galleries follow every epoch (a real run's default is
    # every 10 s, which leaves short epochs their CPU).
    with Recorder(
        url, run=run_name, dataset=train_set, config=run_config, state_interval=0.0
    ) as recorder:
        print(f"recording run {run_name!r} into {url}")
        if serve is not None:
            server = _start_server(url, *serve)
            if server is None:
                return 1
        header = (
            f"{'epoch':>5} {'train loss':>10} {'test loss':>9} {'accuracy':>8} {'draws':>6} "
            f"{'distinct':>8} {'evicted':>7} {'of them flipped':>15} {'seconds':>7}"
        )
        print(header)

        def report(stats: EpochStats, sampler: HeapqSampler | None) -> None:
            _progress_done()
            print(
                f"{stats.epoch:>5} {stats.train_loss:>10.4f} {stats.test_loss:>9.4f} "
                f"{stats.test_accuracy:>8.2%} {stats.draws:>6} {stats.distinct_visited:>8} "
                f"{stats.evicted:>7} {stats.evicted_flipped:>15} {stats.seconds:>7.1f}",
                flush=True,
            )

        history = train_mnist(
            config,
            on_epoch=report,
            on_step=_progress,
            sampler_factory=lambda dataset: HeapqSampler(
                dataset,
                shuffle=True,
                seed=seed,
                max_visits=max_visits,
                policy=policy,
                recorder=recorder,
            ),
            wrap_dataset=recorder.wrap,  # relabels made in the dashboard reach training
            splits=splits,
        )
    last = history[-1]
    print(
        f"done: {last.test_accuracy:.2%} test accuracy; {last.evicted_flipped} of the "
        f"{last.evicted} evicted samples are among the {len(flipped)} flipped labels"
    )
    if server is not None:
        print(f"dashboard: {server.base_url}  (Ctrl-C to stop)", flush=True)
        try:
            while server.running:
                server.join(0.5)
        except KeyboardInterrupt:
            print("stopped")
    return 0


_bar_shown = False


def _port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _progress(step: int, total: int) -> None:
    """A one-line progress bar on stderr for the current epoch."""
    global _bar_shown
    if sys.stderr.isatty() or step == total or step % 25 == 0:
        width = 30
        filled = width * step // max(total, 1)
        sys.stderr.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {step}/{total} batches")
        sys.stderr.flush()
        _bar_shown = True


def _progress_done() -> None:
    global _bar_shown
    if _bar_shown:
        sys.stderr.write("\r" + " " * 60 + "\r")
        sys.stderr.flush()
        _bar_shown = False


def _start_server(url: str, host: str, port: int) -> BackgroundServer | None:
    """Serves the dashboard on a background thread while training runs."""
    from .server.server import BackgroundServer
    from .server.settings import LOOPBACK_HOSTS, Settings

    if host not in LOOPBACK_HOSTS and not Settings().token:
        print(
            f"datasetq demo: refusing to listen on {host} without DATASETQ_TOKEN", file=sys.stderr
        )
        return None
    server = BackgroundServer(Settings(db=url, host=host, port=port), host, port)
    if not server.start():
        print(f"datasetq demo: could not serve on {host}:{port} (in use?)", file=sys.stderr)
        return None
    print(f"dashboard: {server.base_url}  (live while training)", flush=True)
    return server


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
