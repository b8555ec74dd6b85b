"""key-schedule.json: GroupContext encoding and every epoch secret over a chain of epochs (§8).

The exporter label in this file is the literal text of the JSON string (it looks like hex but is
not decoded), a known trap of the mlswg vectors.
"""

from __future__ import annotations

from ..crypto import CipherSuite
from ..key_schedule import derive_epoch_secrets
from ..messages import GroupContext
from . import Counts
from ._cases import h, run_suite_cases

_FIELDS = (
    "joiner_secret",
    "welcome_secret",
    "sender_data_secret",
    "encryption_secret",
    "exporter_secret",
    "epoch_authenticator",
    "external_secret",
    "confirmation_key",
    "membership_key",
    "resumption_psk",
    "init_secret",
)


def _check(cs: CipherSuite, c: dict) -> str | None:
    group_id = h(c["group_id"])
    init_secret = h(c["initial_init_secret"])
    for i, e in enumerate(c["epochs"]):
        gc = GroupContext(cs.id, group_id, i, h(e["tree_hash"]), h(e["confirmed_transcript_hash"]), [])
        gc_bytes = gc.to_bytes()
        if gc_bytes != h(e["group_context"]):
            return f"epoch {i}: group_context"
        if GroupContext.from_bytes(gc_bytes) != gc:
            return f"epoch {i}: group_context round trip"
        secrets = derive_epoch_secrets(cs, init_secret, h(e["commit_secret"]), h(e["psk_secret"]), gc)
        for name in _FIELDS:
            if getattr(secrets, name) != h(e[name]):
                return f"epoch {i}: {name}"
        if secrets.external_key_pair(cs)[1] != h(e["external_pub"]):
            return f"epoch {i}: external_pub"
        x = e["exporter"]
        got = secrets.exporter(cs, x["label"].encode(), h(x["context"]), x["length"])
        if got != h(x["secret"]):
            return f"epoch {i}: exporter"
        init_secret = secrets.init_secret
    return None


def run(cases: list[dict]) -> Counts:
    return run_suite_cases(cases, _check)
