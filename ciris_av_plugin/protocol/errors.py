"""Typed errors of the shared wire codecs (headers, fragments, receiver reports, NACKs).

They keep their places in the layer hierarchies (a header error is a :class:`MediaError`, a report
error a :class:`RelayError`) so existing ``except`` clauses catch them as before; they are defined
here because both a member and the relay decode these packets.
"""

from __future__ import annotations

from ..errors import MediaError, RelayError


class HeaderError(MediaError):
    """A forwarding or fragment header is malformed, truncated or of an unknown version."""


class FragmentError(MediaError):
    """A fragment's offsets or lengths are inconsistent or out of range."""


class ReportError(RelayError):
    """A receiver-report packet is truncated, of an unknown version or otherwise malformed."""
