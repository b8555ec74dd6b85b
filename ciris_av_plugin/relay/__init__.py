"""Relay layer (sans-I/O): the forwarding engine, receiver reports, and the delivery-service logic."""
