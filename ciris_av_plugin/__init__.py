"""ciris-av-plugin: end-to-end encrypted group video for CIRIS fabric nodes over Reticulum.

Layers (see ARCHITECTURE in the README): ``mls`` (RFC 9420), ``media`` (RFC 9605 SFrame,
forwarding header, fragments), ``relay`` (forwarding engine, directory, delivery service),
``transport`` (the only RNS code) and ``store`` (the only disk code). Everything but
``transport`` and ``store`` is sans-I/O.
"""

__version__ = "0.1.0"
