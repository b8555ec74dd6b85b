"""``ciris-av``: identities, the embedded fabric node, and the publish/watch/demo front ends.

Each subcommand is a thin function over library code: ``keys`` over ``store.identity``, ``node``
over ``host``, and ``publish``/``watch``/``demo`` over the transport engineer's client and
integration code, which they import lazily so ``keys`` and ``node --check`` work without them.
The CLI is the one place that prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ciris_av_plugin import __version__
from ciris_av_plugin.config import Config, ConfigError, parse_config
from ciris_av_plugin.errors import AVError

EXIT_OK = 0
EXIT_FAILED = 1

NODE_DEFAULTS = {"realtime_av.enabled": True}
"""``ciris-av node`` without a config file runs the plugin: that is what the embedded node is for."""


def _parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as TOML (``true``, ``64``, ``["relay"]``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. realtime_av.enabled=true")
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip(), parsed


def load_cli_settings(
    path: str | None, sets: Sequence[str], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The settings a subcommand runs with: subcommand defaults < file < ``--set`` overrides."""
    from ciris_av_plugin.host import load_settings

    return load_settings(path, defaults=defaults, overrides=dict(_parse_override(item) for item in sets))


# ---- keys -------------------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    from ciris_av_plugin.store.identity import IdentityStore

    config = parse_config(load_cli_settings(args.config, args.set))
    store = IdentityStore(Path(args.data_dir).expanduser() if args.data_dir else config.node.data_dir)
    if args.keys_command == "create":
        ident = store.create(args.name)
        print(f"{ident.name}  <{ident.hexhash}>  {store.path_of(ident.name)}")
        return EXIT_OK
    names = [args.name] if args.name else store.names()
    rows = []
    for name in names:
        ident = store.load(name)
        rows.append({"name": ident.name, "hash": ident.hexhash, "public_key": ident.public_key.hex()})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no identities in {store.directory}")
    else:
        for row in rows:
            print(f"{row['name']}  <{row['hash']}>")
    return EXIT_OK


# ---- node -------------------------------------------------------------------------------------


def cmd_node(args: argparse.Namespace) -> int:
    from ciris_av_plugin.host import FabricNode, run_node

    node = FabricNode.from_settings(load_cli_settings(args.config, args.set, NODE_DEFAULTS))
    config = node.config
    if not args.verbose:
        logging.getLogger().setLevel(config.node.log_level.upper())
    if args.check:
        print(f"configuration OK: {_describe(config)}")
        return EXIT_OK

    def on_ready(running: FabricNode) -> None:
        status = running.status()
        print(f"node <{status['identity']}> listening on {status['listen_addr']}", flush=True)
        for plugin_status in status["plugins"]:
            for name, dispatcher in plugin_status.get("dispatchers", {}).items():
                print(f"  {name}: destination {dispatcher.get('destination')}", flush=True)
        if args.ready_file:
            from ciris_av_plugin.store.identity import write_json_file

            write_json_file(args.ready_file, status)

    return run_node(node, on_ready=on_ready)


def _describe(config: Config) -> str:
    av = config.realtime_av
    return (
        f"realtime_av {'enabled' if av.enabled else 'disabled'} roles={','.join(av.roles)} "
        f"listen={config.net.listen_addr} data_dir={config.node.data_dir} identity={config.node.identity}"
    )


# ---- publish / watch / demo: delegated --------------------------------------------------------


def _delegate(module_name: str, function: str, argv: Sequence[str]) -> int:
    """Run ``module.function(argv)`` from code that lands separately; say so plainly if absent."""
    import importlib
    import inspect

    try:
        module = importlib.import_module(module_name)
        entry = getattr(module, function)
    except (ImportError, AttributeError) as exc:
        print(f"ciris-av: {module_name}.{function} is not available ({exc})", file=sys.stderr)
        return EXIT_FAILED
    # Delegates are argparse mains: main(argv) or main() reading sys.argv; serve both shapes.
    if inspect.signature(entry).parameters:
        result = entry(list(argv))
    else:
        saved, sys.argv = sys.argv, [f"ciris-av {module_name}", *argv]
        try:
            result = entry()
        finally:
            sys.argv = saved
    return int(result or 0)


def cmd_publish(args: argparse.Namespace) -> int:
    return _delegate("ciris_av_plugin.transport.media_clients", "publish_main", args.rest)


def cmd_watch(args: argparse.Namespace) -> int:
    return _delegate("ciris_av_plugin.transport.media_clients", "watch_main", args.rest)


def cmd_demo(args: argparse.Namespace) -> int:
    # integration/ lives beside the package in a source checkout (it is not installed); let
    # `ciris-av demo` find it from any working directory when the package runs from a checkout.
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "integration" / "demo.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return _delegate("integration.demo", "main", args.rest)


# ---- parser -----------------------------------------------------------------------------------


DELEGATED = ("publish", "watch", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ciris-av", description="End-to-end encrypted group video over Reticulum.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", metavar="PATH", help="TOML configuration file (dotted keys)")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE",
            help="override one setting, value as TOML (e.g. --set net.listen_addr='\"127.0.0.1:4343\"')",
        )

    keys = sub.add_parser("keys", help="create or show identities")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a new named identity")
    create.add_argument("name")
    show = keys_sub.add_parser("show", help="show one identity, or list all")
    show.add_argument("name", nargs="?")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    for p in (create, show):
        config_options(p)
        p.add_argument("--data-dir", metavar="DIR", help="identity store location (default: node.data_dir)")
    keys.set_defaults(func=cmd_keys)

    node = sub.add_parser("node", help="run an embedded fabric node until SIGINT/SIGTERM")
    config_options(node)
    node.add_argument("--check", action="store_true", help="validate the configuration and exit")
    node.add_argument("--ready-file", metavar="PATH", help="write the node's status as JSON once it is up")
    node.set_defaults(func=cmd_node)

    for name, func, text in (
        ("publish", cmd_publish, "publish a stream (synthetic media-shaped frames by default)"),
        ("watch", cmd_watch, "join a stream and show live frames, fps, bitrate, latency, epoch"),
        ("demo", cmd_demo, "one command: node, publisher, subscribers, late joiner, removal, summary"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed through")
        p.set_defaults(func=func)
    return parser


def _split_delegated(argv: list[str]) -> tuple[list[str], list[str]]:
    """Cut ``argv`` after a delegated subcommand: its arguments belong to the delegate, whatever
    they look like (argparse's REMAINDER cannot take a first argument that starts with ``--``)."""
    for index, token in enumerate(argv):
        if not token.startswith("-"):
            if token in DELEGATED:
                return argv[: index + 1], argv[index + 1 :]
            break
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    own, passed = _split_delegated(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(own)
    if args.command in DELEGATED:
        args.rest = passed
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except AVError as exc:
        print(f"ciris-av: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
