"""RFC 9420 §17 registries as IntEnums (unknown values of extensible ones are kept as ints by :func:`.struct.known`).
"""

from __future__ import annotations

import logging
from enum import IntEnum

log = logging.getLogger(__name__)


class ProtocolVersion(IntEnum):
    RESERVED = 0
    MLS10 = 1


class WireFormat(IntEnum):
    RESERVED = 0
    PUBLIC_MESSAGE = 1
    PRIVATE_MESSAGE = 2
    WELCOME = 3
    GROUP_INFO = 4
    KEY_PACKAGE = 5


class CredentialType(IntEnum):
    RESERVED = 0
    BASIC = 1
    X509 = 2


class LeafNodeSource(IntEnum):
    RESERVED = 0
    KEY_PACKAGE = 1
    UPDATE = 2
    COMMIT = 3


class NodeType(IntEnum):
    RESERVED = 0
    LEAF = 1
    PARENT = 2


class ProposalType(IntEnum):
    RESERVED = 0
    ADD = 1
    UPDATE = 2
    REMOVE = 3
    PSK = 4
    REINIT = 5
    EXTERNAL_INIT = 6
    GROUP_CONTEXT_EXTENSIONS = 7


class PSKType(IntEnum):
    RESERVED = 0
    EXTERNAL = 1
    RESUMPTION = 2


class ResumptionPSKUsage(IntEnum):
    RESERVED = 0
    APPLICATION = 1
    REINIT = 2
    BRANCH = 3


class ProposalOrRefType(IntEnum):
    RESERVED = 0
    PROPOSAL = 1
    REFERENCE = 2


class ExtensionType(IntEnum):
    APPLICATION_ID = 0x0001
    RATCHET_TREE = 0x0002
    REQUIRED_CAPABILITIES = 0x0003
    EXTERNAL_PUB = 0x0004
    EXTERNAL_SENDERS = 0x0005


__all__ = [
    "ProtocolVersion",
    "WireFormat",
    "CredentialType",
    "LeafNodeSource",
    "NodeType",
    "ProposalType",
    "PSKType",
    "ResumptionPSKUsage",
    "ProposalOrRefType",
    "ExtensionType",
]
