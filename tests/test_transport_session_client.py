"""SessionClient's worker seam: a verb that fails on the worker fails the caller at once."""

from __future__ import annotations

import pytest
import RNS

from ciris_av_plugin.session import Session, SessionError
from ciris_av_plugin.transport.session_client import SessionClient


def test_a_verb_raising_on_the_worker_is_raised_to_the_caller_not_timed_out() -> None:
    identity = RNS.Identity()
    session = Session(identity.hash, 7)
    client = SessionClient(identity, b"\x00" * 16, session)
    client._worker.start()  # noqa: SLF001 - the worker alone, no relay link
    try:
        def broken(now: float) -> list:
            raise SessionError("broken verb")

        # the timeout is the bound of the wait, far above the microseconds the failure takes
        with pytest.raises(SessionError, match="broken verb"):
            client.call(broken, 0.0, timeout=30.0)
        assert client.requests_failed == 0
    finally:
        client._closing.set()  # noqa: SLF001
