"""MQTT v5 packets: encoding what a client sends, decoding what it receives.

Pure functions over bytes, no I/O: ``mqtt.client`` puts them on a socket. Only what a
client needs is here (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBLISH both ways, PUBACK both ways,
PINGREQ, DISCONNECT; CONNACK, SUBACK, UNSUBACK, PINGRESP, DISCONNECT from the server), and
``server_limits`` to read what a CONNACK allows. Anything malformed raises
``MalformedPacket`` with a one-line reason and the reason code a client closes the
connection with (0x81 malformed, 0x82 protocol error, 0x94 topic alias invalid, 0x95
packet too large). Numbers and layouts follow the OASIS MQTT 5.0 standard, section 2
(packet format) and 3 (packets).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Packet types (the high nibble of the first byte).
CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 8, 9, 10, 11
PINGREQ, PINGRESP, DISCONNECT = 12, 13, 14

PINGREQ_PACKET = b"\xc0\x00"
MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable byte integer


#: Reason codes a client sends in its DISCONNECT when it closes on the server's error.
MALFORMED, PROTOCOL_ERROR, TOPIC_ALIAS_INVALID, PACKET_TOO_LARGE = 0x81, 0x82, 0x94, 0x95
#: DISCONNECT reason that asks the server to publish the Will (section 3.14.2.1).
DISCONNECT_WITH_WILL = 0x04


class MalformedPacket(ValueError):
    """Bytes that are not a valid MQTT v5 packet, or a packet the server must not send;
    ``reason`` is the DISCONNECT reason code that says which."""

    def __init__(self, text: str, reason: int = MALFORMED) -> None:
        super().__init__(text)
        self.reason = reason


# --- properties ----------------------------------------------------------------------

_BYTE, _TWO, _FOUR, _VARINT, _TEXT, _BINARY, _PAIR = range(7)

#: Property identifier -> (name, value type), MQTT 5.0 section 2.2.2.2.
PROPERTIES: dict[int, tuple[str, int]] = {
    0x01: ("payload_format_indicator", _BYTE),
    0x02: ("message_expiry_interval", _FOUR),
    0x03: ("content_type", _TEXT),
    0x08: ("response_topic", _TEXT),
    0x09: ("correlation_data", _BINARY),
    0x0B: ("subscription_identifier", _VARINT),
    0x11: ("session_expiry_interval", _FOUR),
    0x12: ("assigned_client_identifier", _TEXT),
    0x13: ("server_keep_alive", _TWO),
    0x15: ("authentication_method", _TEXT),
    0x16: ("authentication_data", _BINARY),
    0x17: ("request_problem_information", _BYTE),
    0x18: ("will_delay_interval", _FOUR),
    0x19: ("request_response_information", _BYTE),
    0x1A: ("response_information", _TEXT),
    0x1C: ("server_reference", _TEXT),
    0x1F: ("reason_string", _TEXT),
    0x21: ("receive_maximum", _TWO),
    0x22: ("topic_alias_maximum", _TWO),
    0x23: ("topic_alias", _TWO),
    0x24: ("maximum_qos", _BYTE),
    0x25: ("retain_available", _BYTE),
    0x26: ("user_property", _PAIR),
    0x27: ("maximum_packet_size", _FOUR),
    0x28: ("wildcard_subscription_available", _BYTE),
    0x29: ("subscription_identifier_available", _BYTE),
    0x2A: ("shared_subscription_available", _BYTE),
}
_IDS = {name: (ident, kind) for ident, (name, kind) in PROPERTIES.items()}

#: Reason codes a client may meet, for messages (MQTT 5.0 section 2.4).
REASONS: dict[int, str] = {
    0x00: "success", 0x04: "disconnect with will message", 0x10: "no matching subscribers",
    0x11: "no subscription existed", 0x80: "unspecified error", 0x81: "malformed packet",
    0x82: "protocol error", 0x83: "implementation specific error",
    0x84: "unsupported protocol version", 0x85: "client identifier not valid",
    0x86: "bad user name or password", 0x87: "not authorized", 0x88: "server unavailable",
    0x89: "server busy", 0x8A: "banned", 0x8B: "server shutting down",
    0x8C: "bad authentication method", 0x8D: "keep alive timeout",
    0x8E: "session taken over", 0x8F: "topic filter invalid", 0x90: "topic name invalid",
    0x91: "packet identifier in use", 0x93: "receive maximum exceeded",
    0x94: "topic alias invalid", 0x95: "packet too large", 0x96: "message rate too high",
    0x97: "quota exceeded", 0x98: "administrative action", 0x99: "payload format invalid",
    0x9A: "retain not supported", 0x9B: "QoS not supported", 0x9C: "use another server",
    0x9D: "server moved", 0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded", 0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_text(code: int, properties: dict[str, Any] | None = None) -> str:
    """``0x87 not authorized``, with the server's reason string when it sent one."""
    text = f"0x{code:02X} {REASONS.get(code, 'unknown reason')}"
    extra = (properties or {}).get("reason_string")
    return f"{text} ({extra})" if extra else text


# --- primitives ----------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A variable byte integer (7 bits a byte, least significant first)."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when ``data`` ends before the integer does."""
    value = shift = 0
    for index in range(pos, min(pos + 4, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if len(data) - pos >= 4:
        raise MalformedPacket("variable byte integer longer than four bytes")
    return None


def _text(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 0xFFFF:
        raise ValueError(f"string of {len(raw)} bytes is longer than MQTT allows (65535)")
    return len(raw).to_bytes(2, "big") + raw


def _binary(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError(f"binary of {len(value)} bytes is longer than MQTT allows (65535)")
    return len(value).to_bytes(2, "big") + value


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + varint(len(body)) + body


def encode_properties(properties: dict[str, Any] | None = None) -> bytes:
    """Properties with their length in front; values by name (see ``PROPERTIES``)."""
    out = bytearray()
    for name, value in (properties or {}).items():
        ident, kind = _IDS[name]
        pairs = value if kind == _PAIR else [value]
        for item in pairs:
            out.append(ident)
            if kind == _BYTE:
                out.append(item)
            elif kind == _TWO:
                out += item.to_bytes(2, "big")
            elif kind == _FOUR:
                out += item.to_bytes(4, "big")
            elif kind == _VARINT:
                out += varint(item)
            elif kind == _TEXT:
                out += _text(item)
            elif kind == _BINARY:
                out += _binary(item)
            else:
                out += _text(item[0]) + _text(item[1])
    return varint(len(out)) + bytes(out)


class _Reader:
    """Reads fields off one packet's body, raising MalformedPacket past its end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise MalformedPacket("packet ends in the middle of a field")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def int2(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def int4(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def varint(self) -> int:
        found = read_varint(self.data, self.pos)
        if found is None:
            raise MalformedPacket("packet ends in the middle of a variable byte integer")
        value, self.pos = found
        return value

    def text(self) -> str:
        try:
            return self.take(self.int2()).decode()
        except UnicodeDecodeError:
            raise MalformedPacket("string is not UTF-8") from None

    def binary(self) -> bytes:
        return self.take(self.int2())

    def properties(self) -> dict[str, Any]:
        end = self.varint() + self.pos
        if end > len(self.data):
            raise MalformedPacket("properties run past the end of the packet")
        found: dict[str, Any] = {}
        while self.pos < end:
            ident = self.byte()
            if ident not in PROPERTIES:
                raise MalformedPacket(f"unknown property 0x{ident:02X}")
            name, kind = PROPERTIES[ident]
            reads = (self.byte, self.int2, self.int4, self.varint, self.text, self.binary)
            if kind == _PAIR:
                found.setdefault(name, []).append((self.text(), self.text()))
            else:
                found[name] = reads[kind]()
        if self.pos != end:
            raise MalformedPacket("a property runs past the properties' length")
        return found

    def rest(self) -> bytes:
        chunk = self.data[self.pos:]
        self.pos = len(self.data)
        return chunk


# --- what a client sends -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for a client that vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect(
    client_id: str,
    *,
    keepalive_s: int,
    clean_start: bool,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    properties: dict[str, Any] | None = None,
) -> bytes:
    """CONNECT (MQTT 5.0 section 3.1)."""
    flags = 0x02 if clean_start else 0
    payload = _text(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        payload += encode_properties() + _text(will.topic) + _binary(will.payload)
    if username is not None:
        flags |= 0x80
        payload += _text(username)
    if password is not None:
        flags |= 0x40
        payload += _binary(password.encode())
    header = _text("MQTT") + bytes((5, flags)) + keepalive_s.to_bytes(2, "big")
    return _packet(CONNECT << 4, header + encode_properties(properties) + payload)


@dataclass(frozen=True, slots=True)
class Subscription:
    """A topic filter and its subscription options (MQTT 5.0 section 3.8.3.1)."""

    topic_filter: str
    qos: int = 1
    no_local: bool = False
    retain_as_published: bool = False
    #: 0: send retained messages at subscribe, 1: only if the subscription is new, 2: never
    retain_handling: int = 0

    def options(self) -> int:
        return (self.qos | (self.no_local << 2) | (self.retain_as_published << 3)
                | (self.retain_handling << 4))


def subscribe(packet_id: int, subscriptions: Sequence[Subscription]) -> bytes:
    body = packet_id.to_bytes(2, "big") + encode_properties()
    for item in subscriptions:
        body += _text(item.topic_filter) + bytes((item.options(),))
    return _packet(SUBSCRIBE << 4 | 0x2, body)


def unsubscribe(packet_id: int, topic_filters: Iterable[str]) -> bytes:
    body = packet_id.to_bytes(2, "big") + encode_properties()
    for topic_filter in topic_filters:
        body += _text(topic_filter)
    return _packet(UNSUBSCRIBE << 4 | 0x2, body)


def publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False,
            packet_id: int = 0, dup: bool = False,
            properties: dict[str, Any] | None = None) -> bytes:
    """PUBLISH (section 3.3); ``packet_id`` only for QoS 1 and 2; ``properties`` such as
    ``response_topic`` and ``correlation_data`` (request and response, section 4.10)."""
    first = PUBLISH << 4 | (0x08 if dup else 0) | qos << 1 | (0x01 if retain else 0)
    body = _text(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    return _packet(first, body + (encode_properties(properties) if properties else b"\x00")
                   + payload)


def puback(packet_id: int) -> bytes:
    """PUBACK with success and no properties: the short form (section 3.4.2.1)."""
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def disconnect(reason: int = 0) -> bytes:
    """DISCONNECT; reason 0 (normal) tells the broker not to send the Will, 0x04 asks for
    it. Mosquitto 2.0 drops the Will on every other reason too (the standard says it
    should publish it), which is why ``client`` publishes it itself before those."""
    return b"\xe0\x00" if reason == 0 else _packet(DISCONNECT << 4, bytes((reason, 0)))


# --- what a client receives ----------------------------------------------------------


def split_packet(buffer: bytes | bytearray, pos: int = 0,
                 max_size: int | None = None) -> tuple[int, int, int] | None:
    """(first byte, body start, body end) of the packet at ``pos``, or None while the
    buffer does not hold all of it yet; MalformedPacket for one over ``max_size`` bytes."""
    if len(buffer) - pos < 2:
        return None
    found = read_varint(buffer, pos + 1)
    if found is None:
        return None
    length, start = found
    end = start + length
    if max_size is not None and end - pos > max_size:
        raise MalformedPacket(f"a packet of {end - pos} bytes, over the maximum of {max_size}",
                              PACKET_TOO_LARGE)
    if end > len(buffer):
        return None
    return buffer[pos], start, end


@dataclass(slots=True)
class Message:
    """A PUBLISH from the broker."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int
    dup: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


def parse_publish(first_byte: int, body: bytes) -> Message:
    """A PUBLISH body (section 3.3). Topic aliases are refused: a client that announces no
    Topic Alias Maximum must not get one."""
    qos = (first_byte >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    reader = _Reader(body)
    topic = reader.text()
    packet_id = reader.int2() if qos else 0
    if qos and packet_id == 0:
        raise MalformedPacket("PUBLISH with QoS > 0 and packet identifier 0")
    # Most messages carry no properties: skip the dictionary then (the hot path).
    if reader.pos < len(body) and body[reader.pos] == 0:
        reader.pos += 1
        properties: dict[str, Any] = {}
    else:
        properties = reader.properties()
        if "topic_alias" in properties:
            raise MalformedPacket("PUBLISH with a topic alias, which this client never allows",
                                  TOPIC_ALIAS_INVALID)
    if not topic:
        raise MalformedPacket("PUBLISH without a topic")
    return Message(topic, reader.rest(), qos, bool(first_byte & 0x01), packet_id,
                   bool(first_byte & 0x08), properties)


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    reason: int
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What a CONNACK says the server takes from this client (section 3.2.2.3); each an
    absent property's default."""

    receive_maximum: int = 65535  # unacknowledged QoS 1 and 2 PUBLISHes at once
    maximum_qos: int = 2
    retain_available: bool = True
    maximum_packet_size: int | None = None  # None: no limit beyond the protocol's


def server_limits(properties: dict[str, Any]) -> ServerLimits:
    """The limits in a CONNACK's properties; MalformedPacket (protocol error) for values
    the standard forbids."""
    receive_maximum = properties.get("receive_maximum", 65535)
    maximum_qos = properties.get("maximum_qos", 2)
    retain_available = properties.get("retain_available", 1)
    maximum_packet_size = properties.get("maximum_packet_size")
    if receive_maximum == 0:
        raise MalformedPacket("CONNACK with a receive maximum of 0", PROTOCOL_ERROR)
    if maximum_qos not in (0, 1) and "maximum_qos" in properties:
        raise MalformedPacket(f"CONNACK with maximum QoS {maximum_qos}", PROTOCOL_ERROR)
    if retain_available not in (0, 1):
        raise MalformedPacket(f"CONNACK with retain available {retain_available}",
                              PROTOCOL_ERROR)
    if maximum_packet_size == 0:
        raise MalformedPacket("CONNACK with a maximum packet size of 0", PROTOCOL_ERROR)
    return ServerLimits(receive_maximum, maximum_qos, bool(retain_available),
                        maximum_packet_size)


def parse_connack(body: bytes) -> Connack:
    reader = _Reader(body)
    flags = reader.byte()
    reason = reader.byte()
    properties = reader.properties() if reader.pos < len(body) else {}
    return Connack(bool(flags & 0x01), reason, properties)


@dataclass(frozen=True, slots=True)
class Ack:
    """SUBACK and UNSUBACK: a reason code per filter; PUBACK: one reason code."""

    packet_id: int
    reasons: tuple[int, ...]
    properties: dict[str, Any]


def parse_ack(kind: int, body: bytes) -> Ack:
    reader = _Reader(body)
    packet_id = reader.int2()
    if kind == PUBACK:
        reason = reader.byte() if reader.pos < len(body) else 0
        properties = reader.properties() if reader.pos < len(body) else {}
        return Ack(packet_id, (reason,), properties)
    properties = reader.properties()
    reasons = tuple(reader.rest())
    if not reasons:
        raise MalformedPacket("acknowledgement without reason codes")
    return Ack(packet_id, reasons, properties)


def parse_disconnect(body: bytes) -> tuple[int, dict[str, Any]]:
    """(reason code, properties) of a DISCONNECT from the server."""
    if not body:
        return 0, {}
    reader = _Reader(body)
    reason = reader.byte()
    return reason, reader.properties() if reader.pos < len(body) else {}
