"""A stand-in for an ``RNS.Link`` as the relay and media clients use it: id, MDU, status, teardown."""

from __future__ import annotations

import RNS


class FakeLink:
    def __init__(self, link_id: bytes = b"L" * 16, mdu: int = 431) -> None:
        self.link_id = link_id
        self.mdu = mdu
        self.status = RNS.Link.ACTIVE
        self.torn_down = False

    def teardown(self) -> None:
        self.torn_down = True
        self.status = RNS.Link.CLOSED
