"""Child processes of the joiner-path scenario and benchmark: ``python -m integration.join_node SPEC``.

Roles:

* ``delivery_relay`` — a relay with the delivery service, KeyPackage directory and enforcement
  (``transport.delivery_handlers.DeliveryPlane``) over a SQLite file, with an RNS identity kept in a
  file so a restarted relay has the same destination. Stops (tearing its links down) when the
  ``stop`` file appears.
* ``member`` — one or more :class:`~ciris_av_plugin.transport.session_client.SessionClient` members of
  one stream: the creator publishes media, joiners publish KeyPackages and ask to join. Driven by
  command files ``cmd-<n>.json`` the parent writes (``join``, ``leave``, ``remove``, ``rekey``,
  ``stop``), reporting through ``status.json`` (rewritten every ~100 ms) and ``result.json``.

Test-harness only: members shorten RNS's TCP reconnect wait (5 s) so a relay restart costs seconds,
not tens of seconds.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import RNS

from ciris_av_plugin.media.events import FrameDecrypted
from ciris_av_plugin.media.frames import FrameSealer
from ciris_av_plugin.media.mls_keys import epoch_keys
from ciris_av_plugin.participant import SyntheticMedia
from ciris_av_plugin.protocol.control import PATH_COMMIT, PATH_PROPOSE
from ciris_av_plugin.protocol.media_wire import ForwardingHeader
from ciris_av_plugin.relay.delivery import DeliveryService
from ciris_av_plugin.relay.directory import KeyPackageDirectory
from ciris_av_plugin.session import Session
from ciris_av_plugin.session_admission import AllowList, admit_all
from ciris_av_plugin.session_events import EpochChanged, Joined, Removed
from ciris_av_plugin.store import SQLiteStore
from ciris_av_plugin.store.member_state import MemberStateStore
from ciris_av_plugin.transport.delivery_handlers import DeliveryPlane
from ciris_av_plugin.transport.errors import ControlError
from ciris_av_plugin.transport.media_clients import PublisherClient
from ciris_av_plugin.transport.relay import RelayNode
from ciris_av_plugin.transport.session_client import SessionClient
from integration.harness import EVENT_TIMEOUT_S, POLL_S, write_json
from integration.node import Ctx, _jsonable, make_engine

log = logging.getLogger("integration.join_node")

# A video track of its own for forged frames: the engine gives each track to one publishing link,
# so on the publisher's track they would be dropped as "track owned" before the KID check is reached.
FORGED_TRACK = 5
# Members poll their command files and rewrite their status this often.
LOOP_S = 0.01
STATUS_EVERY_S = 0.1
GATE_TIMEOUT_S = EVENT_TIMEOUT_S
"""How long a built racing commit waits for the parent's gate before it is submitted anyway."""


def load_identity(path: str) -> RNS.Identity:
    identity = RNS.Identity.from_file(path)
    if identity is None:
        raise RuntimeError(f"no identity in {path}")
    return identity


# ---- relay ------------------------------------------------------------------------------------


def role_delivery_relay(ctx: Ctx) -> None:
    spec = ctx.spec
    ctx.start_rns()
    identity = load_identity(spec["identity"])
    relay = RelayNode(identity, make_engine("engine"))
    store = SQLiteStore(spec["db"])
    ds = DeliveryService(store)
    directory = KeyPackageDirectory(store, ds.may_fetch)
    ds.directory = directory
    plane = DeliveryPlane(relay, ds, directory, member_link_timeout=spec.get("member_link_timeout"))
    relay.start()
    plane.start()
    ctx.ready(dest=relay.destination_hash.hex(), pid=os.getpid())
    deadline = time.monotonic() + spec.get("duration", 120)
    while not ctx.should_stop() and time.monotonic() < deadline:
        time.sleep(0.05)
        write_json(ctx.workdir / "status.json", {"counters": relay.counters(), "closed_for_removal":
                                                   plane.closed_for_removal, "filter_drops": dict(plane.enforcer.drops)})
    result = {
        "counters": relay.counters(),
        "delivery": dict(ds.counters),
        "directory": dict(directory.counters),
        "filter_drops": dict(plane.enforcer.drops),
        "closed_for_removal": plane.closed_for_removal,
        "engine": _jsonable(relay.engine_stats()),
    }
    plane.stop()
    relay.stop()
    time.sleep(0.2)  # let the link teardowns leave before the process does
    store.close()
    ctx.result(**result)


# ---- members ----------------------------------------------------------------------------------


class Member:
    """One identity's session, media and bookkeeping inside a member process."""

    def __init__(self, ctx: Ctx, spec: dict[str, Any], relay_hash: bytes, stream_id: int, marker: bytes) -> None:
        self.name = spec["name"]
        self.spec = spec
        self.marker = marker
        self.identity = load_identity(spec["identity"])
        allow = spec.get("allow")
        policy = admit_all if allow is None else AllowList({bytes.fromhex(h) for h in allow})
        self.session = Session(self.identity.hash, stream_id, policy=policy, publisher=spec.get("publisher", False))
        # A restarted member process points state_dir at its predecessor's directory (restore).
        workdir = Path(spec["state_dir"]) if spec.get("state_dir") else ctx.workdir / self.name
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.retained = MemberStateStore(workdir / "retained.state")
        self.lock = threading.Lock()
        self.frames_by_epoch: dict[int, int] = {}
        self.frames = 0
        self.bad_payloads = 0
        self.first_frame_at: float | None = None
        self.first_sealer_epoch: int | None = None
        self.first_keyframe_at: float | None = None
        self.join_requested_at: float | None = None
        self.joined_at: float | None = None
        self.epoch_at: dict[int, float] = {}
        self.auth: dict[int, str] = {}
        self.removed_at_epoch: int | None = None
        self.rogue: dict[str, str] = {}
        """Outcome (``accepted`` or the refusal code) of each roster attack this member tried."""
        self.rekey_built_at_epoch: int | None = None
        self.forgers: list[PublisherClient] = []
        self.capture = open(workdir / "capture.bin", "ab") if spec.get("capture") else None  # noqa: SIM115
        self.client = SessionClient(
            self.identity, relay_hash, self.session,
            state_store=MemberStateStore(workdir / "member.state"),
            on_frame=self._on_frame, on_event=self._on_event,
            on_packet=self._on_packet if self.capture else None,
        )

    def _on_packet(self, data: bytes) -> None:
        if data[:1] == b"\x01" and self.capture is not None:
            with self.lock:
                self.capture.write(struct.pack(">I", len(data)) + data)

    def _on_frame(self, ev: FrameDecrypted) -> None:
        now = time.time()
        ok = ev.payload.startswith(self.marker)
        with self.lock:
            self.frames += 1
            self.bad_payloads += not ok
            self.frames_by_epoch[ev.epoch] = self.frames_by_epoch.get(ev.epoch, 0) + 1
            if self.first_frame_at is None:
                self.first_frame_at = now
            if self.first_keyframe_at is None and ev.header.keyframe and ev.decodable:
                self.first_keyframe_at = now

    def _on_event(self, ev: Any) -> None:
        """Runs on the session worker: the group may be read here."""
        now = time.time()
        group = self.session.group
        if isinstance(ev, Joined | EpochChanged) and group is not None and group.active:
            self.epoch_at.setdefault(group.epoch, now)
            self.auth[group.epoch] = group.epoch_authenticator.hex()
            if isinstance(ev, Joined):
                self.joined_at = now
            # What a removed member would keep: the last state it had before its removal.
            self.retained.save(group.to_bytes())
        elif isinstance(ev, Removed):
            self.removed_at_epoch = ev.epoch

    def start(self) -> None:
        self.client.connect()
        if self.spec.get("restore"):
            state = MemberStateStore(self.workdir / "member.state").load()
            if state is None:
                raise RuntimeError("nothing to restore")
            self.client.call(self.session.restore, state)
            self.client.start_publishing()
        if self.spec.get("create"):
            self.client.call(self.session.create, bytes.fromhex(self.spec["group_id"]), time.time())
            self.client.start_publishing()
        if self.spec.get("join"):
            self.join()

    def join(self) -> None:
        ident = self.identity
        self.client.call(self.session.publish_key_packages, time.time(), ident.get_public_key(), ident.sign)
        self.join_requested_at = time.time()
        self.client.call(self.session.request_join)

    def status(self) -> dict[str, Any]:
        group = self.session.group
        sub = self.client.subscriber
        with self.lock:
            return {
                "identity": self.identity.hash.hex(),
                "epoch": None if group is None or not group.active else group.epoch,
                "auth": dict(self.auth),
                "epoch_at": dict(self.epoch_at),
                "frames": self.frames,
                "bad_payloads": self.bad_payloads,
                "frames_by_epoch": dict(self.frames_by_epoch),
                "first_frame_at": self.first_frame_at,
                "first_keyframe_at": self.first_keyframe_at,
                "join_requested_at": self.join_requested_at,
                "joined_at": self.joined_at,
                "removed_at_epoch": self.removed_at_epoch,
                "members": 0 if group is None or not group.active else len(group.members),
                "rogue": dict(self.rogue),
                "rekey_built_at_epoch": self.rekey_built_at_epoch,
                "counters": dict(self.session.counters),
                "subscriber_link_up": None if sub is None else sub.client.connected,
                "subscriber_link_closes": None if sub is None else sub.client.reconnects,
                "packets_received": 0 if sub is None else sub.client.received_packets,
                "drops": {} if sub is None else dict(sub.drops),
                "sealer_epoch": self.client.sealer.epoch,
                "first_sealer_epoch": self.first_sealer_epoch,
                "frames_sent": 0 if self.client.publisher is None else self.client.publisher.frames_sent,
                "requests_failed": self.client.requests_failed,
                "control_up": self.client.control.connected,
            }

    def command(self, cmd: dict[str, Any]) -> None:
        do = cmd["do"]
        if do == "join":
            self.join()
        elif do == "leave":
            self.client.submit(self.session.leave)
        elif do == "remove":
            self.client.submit(self.session.remove, bytes.fromhex(cmd["identity"]))
        elif do == "rekey":
            gate = Path(cmd["gate"])

            def build_then_wait() -> list[Any]:
                actions = self.session.rekey()  # the commit is built on the current epoch now...
                group = self.session.group
                self.rekey_built_at_epoch = None if group is None else group.epoch
                deadline = time.monotonic() + GATE_TIMEOUT_S
                while not gate.exists() and time.monotonic() < deadline:  # ...and submitted when the
                    time.sleep(POLL_S)  # parent opens the gate, once every racer has built its own
                return actions

            self.client.submit(build_then_wait)
        elif do == "forge":
            self.forge(cmd["as_leaf"], cmd.get("frames", 20))
        elif do in ("propose_remove", "commit_remove"):
            self.client.submit(self._evict, do, bytes.fromhex(cmd["identity"]))

    def _evict(self, how: str, victim: bytes) -> list[Any]:
        """A rogue member tries to evict ``victim`` past its own session (which never sends either):
        a Remove proposal for the victim's leaf, or a commit removing it by value. Runs on the
        session worker, so the group is not touched concurrently."""
        group = self.session.group
        assert group is not None
        stream = self.session.stream_id
        pending = None
        if how == "propose_remove":
            path, body = PATH_PROPOSE, {"stream_id": stream, "proposal": group.propose_remove(victim)}
        else:
            pending = group.commit(removes=[victim], include_pending=False)  # not its refused proposal
            path, body = PATH_COMMIT, {"stream_id": stream, "commit": pending.commit}
        try:
            self.client.control.request(path, body)
        except ControlError as exc:
            outcome = exc.code
            if pending is not None:
                group.discard_pending()
        else:
            outcome = "accepted"
            if pending is not None:
                group.merge_pending()
        with self.lock:
            self.rogue[how] = outcome
        return []

    def forge(self, as_leaf: int, frames: int) -> None:
        """A member seals frames under another member's KID (SFrame cannot stop it, RFC 9605 §7.2) and
        publishes them on a link of its own: the relay must drop every one."""
        group = self.session.group
        assert group is not None
        keys = epoch_keys(group)
        sealer = FrameSealer()
        sealer.set_epoch(keys.epoch, keys.base_key, keys.leaf_count, as_leaf)
        pub = PublisherClient(self.identity, self.client.relay_hash, self.session.stream_id, sealer)
        pub.connect()
        for i in range(frames):
            fh = ForwardingHeader(stream_id=self.session.stream_id, track_id=FORGED_TRACK, kind=1, frame_seq=i,
                                  gop_id=0, capture_ts_us=0, keyframe=True)
            pub.send_frame(fh, b"FORGED" + os.urandom(200))
            time.sleep(0.01)
        # Kept open until the process stops: closing now could drop frames a loaded machine has
        # not sent yet, and the scenario waits for the relay to have dropped every one.
        self.forgers.append(pub)


class Publisher(SyntheticMedia):
    """The package's synthetic media (``ciris-av publish`` sends the same frames): media-shaped frames
    at a fixed rate, keyframes on every epoch change and on request, payloads opening with the
    scenario's marker, capture timestamps counted from the start of the stream."""

    def __init__(self, member: Member, stream_id: int, bits_per_s: float) -> None:
        super().__init__(member.client, stream_id, bits_per_s, marker=member.marker, media_origin_s=0.0)
        self.member = member

    def pump(self) -> int:
        sent = super().pump()
        if self.member.first_sealer_epoch is None:  # the first epoch this process ever sealed under
            self.member.first_sealer_epoch = self.first_sealer_epoch
        return sent


def role_member(ctx: Ctx) -> None:
    spec = ctx.spec
    from RNS.Interfaces import TCPInterface

    TCPInterface.TCPClientInterface.RECONNECT_WAIT = 0.5  # harness: see the module docstring
    ctx.start_rns()
    relay_hash = bytes.fromhex(spec["relay"])
    stream_id = spec["stream_id"]
    marker = bytes.fromhex(spec["marker"])
    members = [Member(ctx, m, relay_hash, stream_id, marker) for m in spec["members"]]
    for m in members:
        m.start()
    ctx.ready(identities={m.name: m.identity.hash.hex() for m in members})
    ctx.wait_go()  # the media clock starts once every process of the scenario is up
    pubs = [Publisher(m, stream_id, spec.get("bits_per_s", 400_000)) for m in members if m.spec.get("publisher")]
    done: set[str] = set()
    next_status = 0.0
    deadline = time.monotonic() + spec.get("duration", 120)
    stop = False
    while not stop and time.monotonic() < deadline:
        for p in pubs:
            p.pump()
        for path in sorted(ctx.workdir.glob("cmd-*.json")):
            if path.name in done:
                continue
            done.add(path.name)
            try:
                cmd = json.loads(path.read_text())
            except json.JSONDecodeError:
                done.discard(path.name)  # not fully written yet
                continue
            if cmd["do"] == "stop":
                stop = True
                break
            target = next((m for m in members if m.name == cmd["member"]), None)
            if target is not None:
                try:
                    target.command(cmd)
                except Exception:
                    log.exception("command %s failed", cmd)
        if time.monotonic() >= next_status:
            next_status = time.monotonic() + STATUS_EVERY_S
            write_json(ctx.workdir / "status.json", {m.name: m.status() for m in members})
        time.sleep(LOOP_S)
    status = {m.name: m.status() for m in members}
    for p in pubs:
        status[p.member.name]["keyframes_sent"] = p.keyframes
    for m in members:
        if m.capture is not None:
            with m.lock:
                m.capture.close()
                m.capture = None
        for forger in m.forgers:
            forger.close()
        m.client.close()
    ctx.result(members=status)


ROLES = {"delivery_relay": role_delivery_relay, "member": role_member}


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=spec.get("loglevel", "WARNING"), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    killer = threading.Timer(float(spec.get("timeout", 120)), lambda: os._exit(124))
    killer.daemon = True
    killer.start()
    try:
        ROLES[spec["role"]](Ctx(spec))
    except BaseException:
        log.exception("role %s failed", spec["role"])
        sys.stdout.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
