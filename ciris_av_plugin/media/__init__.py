"""Sans-I/O media layer: forwarding header, fragments, SFrame (RFC 9605), key ring, replay window."""
