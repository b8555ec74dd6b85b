"""Hypothesis: mutated handshakes, Welcomes and states only ever raise MLSError, and change nothing.

Valid messages are built once per module; each example flips, truncates or splices bytes and feeds
the result to a Group, a PublicGroup, Group.join and the state decoders.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support_mls_group import SUITE, clock, ident

from ciris_av_plugin.mls import Group, KeyPackageBundle, MLSError, PublicGroup

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def world():
    a = Group.create(b"fuzz", ident(0), SUITE, clock=clock)
    public = PublicGroup.from_group_info(a.group_info(), clock=clock)
    bundles = [KeyPackageBundle.generate(ident(i), SUITE, clock=clock) for i in (1, 2, 3)]
    pending = a.commit(adds=[b.key_package for b in bundles], force_path=True)
    public.process(pending.commit)
    a.merge_pending()
    b = Group.join(pending.welcome, [bundles[0]], clock=clock)
    joiner = KeyPackageBundle.generate(ident(9), SUITE, clock=clock)
    messages = [
        a.commit(adds=[joiner.key_package], removes=[ident(2)]),
    ]
    welcome = messages[0].welcome
    a.discard_pending()
    msgs = [messages[0].commit, a.commit(force_path=True, private=True).commit, a.leave(), a.encrypt(b"data")]
    a.discard_pending()
    return {"b": b.to_bytes(), "public": public.to_bytes(), "messages": msgs, "welcome": welcome,
            "joiner": joiner}


def mutate(data: bytes, pos: int, kind: int, value: int) -> bytes:
    pos %= max(1, len(data))
    if kind == 0:
        return data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1 :]
    if kind == 1:
        return data[:pos]
    return data[:pos] + bytes([value]) + data[pos:]


MUTATION = st.tuples(st.integers(0, 1 << 20), st.integers(0, 2), st.integers(0, 255))


@FUZZ
@given(which=st.integers(0, 3), m=MUTATION)
def test_mutated_messages_raise_mlserror_and_change_nothing(world, which: int, m) -> None:
    raw = mutate(world["messages"][which], *m)
    b = Group.from_bytes(world["b"], clock=clock)
    public = PublicGroup.from_bytes(world["public"], clock=clock)
    for target in (b, public):
        before = target.to_bytes()
        try:
            target.process(raw)
        except MLSError:
            assert target.to_bytes() == before


@FUZZ
@given(m=MUTATION)
def test_mutated_welcome_raises_mlserror(world, m) -> None:
    raw = mutate(world["welcome"], *m)
    try:
        Group.join(raw, [world["joiner"]], clock=clock)
    except MLSError:
        pass


@FUZZ
@given(m=MUTATION)
def test_mutated_states_raise_mlserror(world, m) -> None:
    for data, load in ((world["b"], lambda d: Group.from_bytes(d, clock=clock)), (world["public"], PublicGroup.from_bytes)):
        try:
            load(mutate(data, *m))
        except MLSError:
            pass
