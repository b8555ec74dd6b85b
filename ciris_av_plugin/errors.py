"""One error family per layer, all under :class:`AVError`.

A state machine that raises one of these has not changed its state (h11's rule): callers may
count the error, drop the input and carry on.
"""


class AVError(Exception):
    """Root of every error this package raises on purpose."""


class MLSError(AVError):
    """RFC 9420 layer: decoding, validation or key-schedule failures."""


class MediaError(AVError):
    """Media layer: headers, fragments, reassembly, SFrame."""


class RelayError(AVError):
    """Relay layer: forwarding engine, directory, delivery service refusals."""


class TransportError(AVError):
    """Transport layer: RNS links, requests, identification."""


class ConfigError(AVError):
    """The configuration is invalid; the message names the key and what was expected.

    Defined here, not in ``config.py``, because the store raises it too (reading a configuration
    file): the store must not import the configuration module that imports it.
    """
