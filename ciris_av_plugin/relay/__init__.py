"""Relay layer (sans-I/O): the forwarding engine, the KeyPackage directory and the delivery service.

The packet and message formats the relay shares with members are ``ciris_av_plugin/protocol/``; nothing
here imports member code (``session``, ``participant``).
"""
