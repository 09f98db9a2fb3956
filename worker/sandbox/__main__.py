"""`python -m worker.sandbox run --code-file F [--dataset NAME=PATH ...] [--backend B]`

Runs one snippet through the configured sandbox backend and prints the result JSON, so an
operator can check a sandbox by hand. Exit status 0 when the sandbox ran (whatever the
snippet did), 1 when no sandbox could be started, 2 on bad arguments.
`python -m worker.sandbox health` prints the backend's health.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.sandbox import BACKENDS, SandboxUnavailable, default_limits, get_backend

_FORMATS = {
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".parquet": "parquet",
    ".csv": "csv",
}


def _dataset(spec: str) -> dict[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name.isidentifier() or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH with NAME an identifier: {spec!r}")
    fmt = _FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise argparse.ArgumentTypeError(f"{path}: use a .arrow, .parquet or .csv file")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file")
    return {"name": name, "path": str(Path(path).resolve()), "format": fmt}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker.sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one snippet and print the result JSON")
    run.add_argument("--code-file", required=True, type=Path, help="the snippet ('-' = stdin)")
    run.add_argument("--dataset", action="append", default=[], type=_dataset, metavar="NAME=PATH")
    run.add_argument("--backend", choices=list(BACKENDS))
    run.add_argument("--timeout", type=int, help="seconds (default: SANDBOX_TIMEOUT_S)")
    run.add_argument("--memory-mb", type=int, help="default: SANDBOX_MEMORY_MB")
    run.add_argument("--max-output-bytes", type=int)
    run.add_argument("--cold", action="store_true", help="process backend: no warm pool")
    health = commands.add_parser("health", help="print the backend's health")
    health.add_argument("--backend", choices=list(BACKENDS))
    args = parser.parse_args(argv)

    from api.config import get_settings

    settings = get_settings()
    if getattr(args, "cold", False):
        settings = settings.model_copy(update={"sandbox_mode": "cold"})
    try:
        backend = get_backend(settings, args.backend)
    except SandboxUnavailable as exc:
        print(f"no sandbox: {exc}", file=sys.stderr)
        return 1
    with backend:
        if args.command == "health":
            print(json.dumps(backend.health()))
            return 0
        code = sys.stdin.read() if str(args.code_file) == "-" else args.code_file.read_text()
        limits = default_limits(settings)
        for key, value in (
            ("timeout_s", args.timeout),
            ("memory_mb", args.memory_mb),
            ("max_output_bytes", args.max_output_bytes),
        ):
            if value is not None:
                limits[key] = value
        try:
            result = backend.run(
                {"code": code, "datasets": args.dataset, "workspace": [], "limits": limits}
            )
        except SandboxUnavailable as exc:
            print(f"no sandbox: {exc}", file=sys.stderr)
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
