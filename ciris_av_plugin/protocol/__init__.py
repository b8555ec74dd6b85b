"""What both ends of a link must agree on, byte for byte: the shared wire formats.

A member (``session.py``, ``participant.py``) and the relay (``relay/``) each import from here and
never from each other (``tests/test_protocol_boundaries.py``). ``media/`` also builds on it; its repair
machinery (loss detector, retransmission ring) runs on every hop, relay included. Nothing here does
I/O or keeps state between calls.

* ``control`` — control request paths and long-poll event kinds (explicit, stable strings);
* ``codes`` — the error codes of refused requests;
* ``envelope`` — the signed KeyPackage envelope a member publishes and the relay checks;
* ``media_wire`` — the forwarding and fragment headers and the media packet types;
* ``reports`` — receiver reports (subscriber to relay);
* ``nack`` — the ``PT_NACK`` packet (any receiver to the hop that sent it);
* ``errors`` — the typed errors of these codecs.

Changing any byte here is a protocol change (ARCHITECTURE.md); the golden tests
(``tests/test_protocol_golden.py`` and each codec's own tests) are there to make that loud.
"""
