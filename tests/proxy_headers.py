"""PROXY protocol headers as literal bytes, written from HAProxy's specification (doc/proxy-protocol.txt), not with
sockhop's own formatter -- so that a mistake shared by sockhop's formatter and its parser cannot hide.

Every header names the client 203.0.113.7 port 51234 (2001:db8::7 for IPv6) connecting to 192.0.2.1 port 443
(2001:db8::1).
"""

from __future__ import annotations

CLIENT = ("203.0.113.7", 51234)
SERVED = ("192.0.2.1", 443)
CLIENT6 = ("2001:db8::7", 51234, 0, 0)
SERVED6 = ("2001:db8::1", 443, 0, 0)

# Version 1 (spec 2.1): "PROXY" SP protocol SP source SP destination SP source-port SP destination-port CRLF
V1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"
V1_IPV6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 443\r\n"
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"  # spec 2.1: the receiver keeps the connection's own addresses

# Version 2 (spec 2.2): the 12-byte signature, then version and command (0x2 << 4 | 0x1 PROXY, 0x0 LOCAL), address
# family and transport (0x11 TCP over IPv4, 0x21 TCP over IPv6, 0x00 unspecified), the length of what follows
# (big-endian), then source address, destination address, source port, destination port (all big-endian).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2 = (
    V2_SIGNATURE
    + b"\x21"  # version 2, PROXY
    + b"\x11"  # TCP over IPv4
    + b"\x00\x0c"  # 12 bytes of addresses
    + b"\xcb\x00\x71\x07"  # 203.0.113.7
    + b"\xc0\x00\x02\x01"  # 192.0.2.1
    + b"\xc8\x22"  # 51234
    + b"\x01\xbb"  # 443
)
V2_IPV6 = (
    V2_SIGNATURE
    + b"\x21"  # version 2, PROXY
    + b"\x21"  # TCP over IPv6
    + b"\x00\x24"  # 36 bytes of addresses
    + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x07"  # 2001:db8::7
    + b"\x20\x01\x0d\xb8" + b"\x00" * 11 + b"\x01"  # 2001:db8::1
    + b"\xc8\x22"  # 51234
    + b"\x01\xbb"  # 443
)  # fmt: skip
# LOCAL (spec 2.2: "the connection was established on purpose by the proxy without being relayed", a health
# check): the receiver must use the connection's real addresses and ignore the address block.
V2_LOCAL = V2_SIGNATURE + b"\x20" + b"\x00" + b"\x00\x00"
V2_LOCAL_WITH_ADDRESSES = V2_SIGNATURE + b"\x20" + b"\x11" + b"\x00\x0c" + V2[16:]
