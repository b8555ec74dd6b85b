"""Integration scenarios over real RNS: every node is its own OS process on 127.0.0.1."""
