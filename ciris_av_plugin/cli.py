"""``ciris-av``: identities, the embedded fabric node, and the publish/watch/demo front ends.

Each subcommand is a thin function over library code: ``keys`` over ``store.identity``, ``node``
over ``host``, ``publish``/``watch`` over ``participant`` (a session client over RNS), and ``demo``
over the integration code, all imported lazily so ``keys`` and ``node --check`` start fast.
The CLI is the one place that prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
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


# ---- publish / watch ---------------------------------------------------------------------------

STATUS_EVERY_S = 1.0
PUMP_EVERY_S = 0.005


def _relay_hash(text: str) -> bytes:
    """``--relay``: the relay's destination hash as ``ciris-av node`` prints it (32 hex digits)."""
    try:
        value = bytes.fromhex(text.strip().strip("<>"))
    except ValueError:
        value = b""
    if len(value) != 16:
        raise argparse.ArgumentTypeError(f"{text!r} is not a destination hash (32 hex digits)")
    return value


def _identity_hash(text: str) -> bytes:
    try:
        return _relay_hash(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RNS identity hash (32 hex digits)") from None


def _stream_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"{text!r} is not a stream id (0 to 2^64-1, decimal or 0x hex)")
    return value


def _participant_setup(args: argparse.Namespace) -> tuple[Any, Any, threading.Event]:
    """Settings, identity, RNS (client of ``--connect``) and a SIGINT/SIGTERM shutdown event."""
    from ciris_av_plugin.config import _parse_host_port
    from ciris_av_plugin.host import install_stop_signals
    from ciris_av_plugin.participant import load_rns_identity, start_client_rns

    config = parse_config(load_cli_settings(args.config, args.set))
    if not args.verbose:
        logging.getLogger().setLevel(config.node.log_level.upper())
    # The node this client talks to: --connect, else the local node's own listen address.
    connect = _parse_host_port("--connect", args.connect) if args.connect else config.net.listen_addr
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else config.node.data_dir
    identity = load_rns_identity(data_dir, args.identity)
    start_client_rns(connect.host, connect.port)
    shutdown = threading.Event()
    if threading.current_thread() is threading.main_thread():
        install_stop_signals(shutdown)  # after RNS, which installs its own handlers
    return identity, connect, shutdown


def _kbit(bits_per_s: float) -> str:
    return f"{bits_per_s / 1000:.0f} kbit/s"


def cmd_publish(args: argparse.Namespace) -> int:
    import os
    import time

    from ciris_av_plugin.participant import Participant, SyntheticMedia, admission_policy

    identity, connect, shutdown = _participant_setup(args)
    stream_id = args.stream_id if args.stream_id is not None else int.from_bytes(os.urandom(4), "big")
    policy = admission_policy(None if args.admit_all else list(args.allow))
    me = Participant(identity, args.relay, stream_id, publisher=True, policy=policy)
    try:
        me.connect()
        me.create()
        admitting = "everyone" if args.admit_all else (f"{len(args.allow)} allowed identities" if args.allow else "nobody")
        print(
            f"publishing stream {stream_id} as <{identity.hash.hex()}> via relay <{args.relay.hex()}> at {connect}: "
            f"epoch {me.session.epoch}, admitting {admitting}",
            flush=True,
        )
        media = SyntheticMedia(me.client, stream_id, args.bitrate)
        start = time.monotonic()
        deadline = None if args.seconds is None else start + args.seconds
        next_status = start + STATUS_EVERY_S
        last_frames, last_bytes, last_t = 0, 0, start
        while not shutdown.is_set() and (deadline is None or time.monotonic() < deadline):
            media.pump()
            now = time.monotonic()
            if now >= next_status:
                next_status += STATUS_EVERY_S
                snap = me.snapshot()
                dt = max(1e-6, now - last_t)
                print(
                    f"t={now - start:4.0f}s frames={media.frames_sent} "
                    f"fps={(media.frames_sent - last_frames) / dt:.0f} "
                    f"bitrate={_kbit((media.bytes_sent - last_bytes) * 8 / dt)} keyframes={media.keyframes} "
                    f"epoch={snap['epoch']} members={snap['members']}",
                    flush=True,
                )
                last_frames, last_bytes, last_t = media.frames_sent, media.bytes_sent, now
            shutdown.wait(PUMP_EVERY_S)
        snap = me.snapshot()
        print(
            f"published {media.frames_sent} frames ({media.bytes_sent} bytes, {media.keyframes} keyframes) "
            f"in {time.monotonic() - start:.1f} s; epoch {snap['epoch']}, members {snap['members']}",
            flush=True,
        )
    finally:
        me.close()
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    import time

    from ciris_av_plugin.participant import Participant, ReceiveMeter

    identity, connect, shutdown = _participant_setup(args)
    meter = ReceiveMeter()
    me = Participant(identity, args.relay, args.stream_id, on_frame=meter.on_frame)
    start = time.monotonic()
    deadline = None if args.seconds is None else start + args.seconds
    try:
        me.connect(None if deadline is None else max(1.0, deadline - time.monotonic()))
        me.join()
        print(
            f"asked to join stream {args.stream_id} as <{identity.hash.hex()}> via relay <{args.relay.hex()}> "
            f"at {connect}; waiting for a Welcome",
            flush=True,
        )
        meter.take()
        next_status = time.monotonic() + STATUS_EVERY_S
        while not shutdown.is_set() and (deadline is None or time.monotonic() < deadline):
            shutdown.wait(max(0.0, min(next_status - time.monotonic(), 0.1)))
            now = time.monotonic()
            if now < next_status:
                continue
            next_status += STATUS_EVERY_S
            iv = meter.take()
            snap = me.snapshot()
            if not me.joined.is_set():
                print(f"t={now - start:4.0f}s waiting to be admitted", flush=True)
                continue
            timing = f"jitter={iv.jitter_ms:.1f}ms" if iv.jitter_ms is not None else "jitter=-"
            if args.same_host_clock:
                timing += f" latency={iv.latency_ms:.1f}ms" if iv.latency_ms is not None else " latency=-"
            print(
                f"t={now - start:4.0f}s frames={iv.total_frames} fps={iv.fps:.0f} bitrate={_kbit(iv.bits_per_s)} "
                f"{timing} epoch={snap['epoch']} members={snap['members']}",
                flush=True,
            )
        if not me.joined.is_set():
            print(f"never joined stream {args.stream_id} in {time.monotonic() - start:.1f} s", file=sys.stderr)
            return EXIT_FAILED
        epoch = me.snapshot()["epoch"]
        assert me.joined_at is not None and me.join_started_at is not None
        first = (
            "no frames" if meter.first_frame_at is None
            else f"first frame after {meter.first_frame_at - me.join_started_at:.2f} s"
        )
        print(
            f"watched {meter.total_frames} frames ({meter.total_bytes} bytes) at epoch {epoch}; "
            f"joined in {me.joined_at - me.join_started_at:.2f} s (KeyPackages, join request, Welcome), {first}",
            flush=True,
        )
        if not args.stay:
            me.leave()
    finally:
        me.close()
    return EXIT_OK


# ---- demo: delegated --------------------------------------------------------------------------


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


def cmd_demo(args: argparse.Namespace) -> int:
    # integration/ lives beside the package in a source checkout (it is not installed); let
    # `ciris-av demo` find it from any working directory when the package runs from a checkout.
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "integration" / "demo.py").is_file() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    return _delegate("integration.demo", "main", args.rest)


# ---- parser -----------------------------------------------------------------------------------


DELEGATED = ("demo",)


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

    def participant_options(p: argparse.ArgumentParser) -> None:
        config_options(p)
        p.add_argument("--relay", required=True, type=_relay_hash, metavar="HEX",
                       help="the relay's destination hash (ciris-av node prints it)")
        p.add_argument("--connect", metavar="HOST:PORT",
                       help="the node to connect to over TCP (default: net.listen_addr, the local node)")
        p.add_argument("--identity", required=True, metavar="NAME",
                       help="identity in the store (ciris-av keys create NAME); not the node's own")
        p.add_argument("--data-dir", metavar="DIR", help="identity store location (default: node.data_dir)")
        p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds (default: until SIGINT)")

    publish = sub.add_parser("publish", help="publish a stream of synthetic media-shaped frames")
    participant_options(publish)
    publish.add_argument("--stream-id", type=_stream_id, metavar="N", help="stream id (default: random)")
    admit = publish.add_mutually_exclusive_group()
    admit.add_argument("--allow", action="append", default=[], type=_identity_hash, metavar="HEX",
                       help="admit this identity hash when it asks to join (repeatable; default: nobody)")
    admit.add_argument("--admit-all", action="store_true", help="admit every identity that asks to join")
    publish.add_argument("--bitrate", type=float, default=400_000, metavar="B",
                         help="payload bits per second, video + audio (default 400000)")
    publish.set_defaults(func=cmd_publish)

    watch = sub.add_parser("watch", help="join a stream and show live frames, fps, bitrate, jitter/latency, epoch")
    participant_options(watch)
    watch.add_argument("--stream-id", type=_stream_id, required=True, metavar="N", help="stream to join")
    watch.add_argument("--same-host-clock", action="store_true",
                       help="the publisher runs on this host: also show latency (capture timestamps are "
                            "the publisher's media time, comparable only on one clock)")
    watch.add_argument("--stay", action="store_true", help="do not propose our own removal on exit")
    watch.set_defaults(func=cmd_watch)

    demo = sub.add_parser("demo", help="one command: node, publisher, subscribers, late joiner, removal, summary",
                          add_help=False)
    demo.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed through")
    demo.set_defaults(func=cmd_demo)
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
