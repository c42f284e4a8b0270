"""The ``wxsub`` command line.

Each subcommand lives next to the code it drives and exposes ``register(subparsers)``; this
module only lists them. A subcommand is listed here only once it works. The development tools
(``wxsub kafka``, ``wxsub demo``) and the WeChat API sandbox (``wxsub sandbox``) live in trees
of their own beside the product (``wxsub_dev``, ``wxsub_sandbox``) and are imported by name only
when the parser is built: nothing in ``wxsub`` imports them (``make lint`` checks it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from wxsub.errors import ConfigError, SetupError

__all__ = ["main"]

# module paths, each with register(subparsers) that adds a parser with func=callable(args)->int
_COMMANDS: list[str] = [
    "wxsub_dev.local_kafka",
    "wxsub_sandbox.cli",
    "wxsub.publish",
    "wxsub.gateway.cli",
    "wxsub.worker",
    "wxsub.stats",
    "wxsub.config_cli",
    "wxsub.pauses_cli",
    "wxsub.support.trace",
    "wxsub.support.replay",
    "wxsub_dev.demo.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wxsub",
        description="Turn e-commerce events into WeChat subscribe messages, exactly once.",
    )
    parser.add_argument("--config", help="settings TOML file (default: $WXSUB_CONFIG)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for path in _COMMANDS:
        importlib.import_module(path).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, SetupError) as exc:
        print(f"wxsub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
