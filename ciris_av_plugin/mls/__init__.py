"""RFC 9420 Messaging Layer Security in pure Python over ``cryptography`` (sans-I/O)."""
