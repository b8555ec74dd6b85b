"""The only code that imports RNS: relay destination, client links, control requests, media packets.

``config`` writes a node's RNS config directory; ``hook`` receives link packets (inline in RNS's
inbound worker, or through the packet callback where that hook is unavailable) and probes a link's
TCP send queue; ``control`` holds the pure control-plane parts (bodies, typed errors, rate limits,
the long-poll event queue); ``relay`` binds the forwarding engine to RNS; ``client`` opens an
identified, self-reconnecting link to a relay; ``media_clients`` puts a frame sealer (publisher)
or opener (subscriber, with receiver reports) on top of it.
"""
