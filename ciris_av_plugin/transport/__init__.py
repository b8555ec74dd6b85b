"""The only code that imports RNS: relay destination, client links, control requests, media packets.

``config`` writes a node's RNS config directory, ``hook`` receives link packets (inline in RNS's
inbound worker or through the packet callback), ``control`` holds the pure control-plane parts,
``relay`` binds the forwarding engine to RNS and ``client`` opens identified links to a relay.
"""
