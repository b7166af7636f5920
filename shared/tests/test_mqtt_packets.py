"""The MQTT v5 codec: bytes checked against the OASIS MQTT 5.0 layouts, written out by hand,
and cross-checked with paho-mqtt's decoders (an independent implementation)."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from minerwatch.shared.mqtt import packets as p
from minerwatch.shared.mqtt.packets import MalformedPacket, Subscription, Will


def s(text: str) -> bytes:
    """An MQTT UTF-8 string: two-byte big-endian length, then the bytes (section 1.5.4)."""
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def paho_properties(packet_type: int, data: bytes) -> dict[str, object]:
    """Properties (with their length in front) as paho-mqtt decodes them."""
    props = Properties(packet_type)
    _, consumed = props.unpack(data)
    assert consumed == len(data), "paho read a different length than was encoded"
    return props.json()


# --- variable byte integers -----------------------------------------------------------

# The boundaries from the table in MQTT 5.0 section 1.5.5.
VARINTS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_varint_matches_the_standard_table(value: int, encoded: bytes) -> None:
    assert p.varint(value) == encoded
    assert VariableByteIntegers.encode(value) == encoded  # paho agrees
    # Read back from the middle of a buffer, with bytes after it that must be left alone.
    assert p.read_varint(b"ab" + encoded + b"\x01\x02", 2) == (value, 2 + len(encoded))


@pytest.mark.parametrize("value", [-1, 268_435_456, 2**32])
def test_varint_rejects_what_four_bytes_cannot_hold(value: int) -> None:
    with pytest.raises(ValueError):
        p.varint(value)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff\xff\xff"])
def test_read_varint_waits_for_more_bytes(data: bytes) -> None:
    assert p.read_varint(data, 0) is None
    assert p.read_varint(b"zz" + data, 2) is None


@pytest.mark.parametrize("data", [b"\xff\xff\xff\xff\x7f", b"\x80\x80\x80\x80\x01",
                                  b"\x80\x80\x80\x80"])
def test_read_varint_refuses_a_fifth_byte(data: bytes) -> None:
    # Four bytes that all say "more follows" are malformed, whether or not a fifth came.
    with pytest.raises(MalformedPacket):
        p.read_varint(data, 0)
    with pytest.raises(MalformedPacket):
        p.read_varint(b"\x00" + data, 1)


# --- splitting a stream into packets ----------------------------------------------------


def test_split_packet_waits_for_the_whole_packet() -> None:
    # A 300-byte body needs a two-byte remaining length: cuts inside it must wait too.
    packet = p.publish("t", b"x" * 300, qos=1, packet_id=1)
    assert packet[1:3] == p.varint(len(packet) - 3)
    for cut in range(len(packet)):
        assert p.split_packet(packet[:cut]) is None, cut
        assert p.split_packet(b"\xd0\x00" + packet[:cut], 2) is None, cut
    assert p.split_packet(packet) == (packet[0], 3, len(packet))
    assert p.split_packet(bytearray(b"\xd0\x00" + packet), 2) == (packet[0], 5, len(packet) + 2)


def test_split_packet_walks_packets_back_to_back() -> None:
    packets = [
        p.publish("a/b", b"one", qos=0),
        p.puback(7),
        b"\xd0\x00",  # PINGRESP: empty body
        p.publish("c", b"\x00" * 200, qos=1, packet_id=9, retain=True),
        b"\x90\x04\x00\x01\x00\x01",  # SUBACK
    ]
    stream = bytearray(b"".join(packets)) + packets[0][:3]  # and the start of one more
    pos = 0
    for packet in packets:
        found = p.split_packet(stream, pos)
        assert found is not None
        first, start, end = found
        assert first == packet[0]
        assert bytes(stream[pos:end]) == packet
        assert end - start == len(packet) - (start - pos)
        pos = end
    assert p.split_packet(stream, pos) is None


def test_split_packet_refuses_a_packet_over_the_maximum_size() -> None:
    packet = p.publish("t", b"x" * 300, qos=1, packet_id=1)  # 309 bytes with its header
    assert len(packet) == 309
    assert p.split_packet(packet, 0, 309) == (packet[0], 3, 309)
    assert p.split_packet(packet[:100], 0, 309) is None
    # Refused as soon as the length is known, before the body is buffered.
    with pytest.raises(MalformedPacket, match="309 bytes, over the maximum of 308"):
        p.split_packet(packet[:3], 0, 308)
    with pytest.raises(MalformedPacket, match="over the maximum"):
        p.split_packet(b"\xd0\x00" + packet, 2, 308)


def test_split_packet_refuses_a_five_byte_length() -> None:
    with pytest.raises(MalformedPacket):
        p.split_packet(b"\x30\xff\xff\xff\xff\x7f")


# --- PUBLISH ---------------------------------------------------------------------------


def test_publish_layout() -> None:
    # Section 3.3: type 3, DUP 0x08, QoS in bits 1-2, RETAIN 0x01; topic, packet id,
    # properties (here none: length 0), payload.
    assert p.publish("a/b", b"hi", qos=1, retain=True, dup=True, packet_id=10) == (
        b"\x3b\x0a" + s("a/b") + b"\x00\x0a" + b"\x00" + b"hi")
    # QoS 0 carries no packet identifier.
    assert p.publish("a/b", b"", qos=0) == b"\x30\x06" + s("a/b") + b"\x00"


BINARY = bytes(range(256)) * 2  # zeros and 0xff; the first payload byte 0 looks like props


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("dup", [False, True])
@pytest.mark.parametrize("payload", [b"", b"\x00", BINARY, b"\xff" * 20_000])
def test_publish_round_trip(qos: int, retain: bool, dup: bool, payload: bytes) -> None:
    packet = p.publish("site/é/miner-1", payload, qos=qos, retain=retain, dup=dup,
                       packet_id=0xFFFF if qos else 0)
    found = p.split_packet(packet)
    assert found is not None
    first, start, end = found
    assert end == len(packet)
    message = p.parse_publish(first, packet[start:end])
    assert message.topic == "site/é/miner-1"
    assert message.payload == payload
    assert message.qos == qos
    assert message.retain is retain
    assert message.dup is dup
    assert message.packet_id == (0xFFFF if qos else 0)
    assert message.properties == {}


def test_parse_publish_with_properties_built_by_hand() -> None:
    # Message expiry 60 s (0x02, four bytes) and a user property (0x26, two strings).
    props = b"\x02\x00\x00\x00\x3c" + b"\x26" + s("k") + s("v")
    body = s("t/1") + b"\x00\x05" + bytes((len(props),)) + props + b"\x00\x01payload"
    message = p.parse_publish(0x32, body)
    assert message.packet_id == 5
    assert message.payload == b"\x00\x01payload"
    assert message.properties == {"message_expiry_interval": 60, "user_property": [("k", "v")]}


def test_parse_publish_with_encoded_properties() -> None:
    properties = {
        "payload_format_indicator": 1,
        "message_expiry_interval": 3600,
        "content_type": "application/json",
        "response_topic": "reply/here",
        "correlation_data": b"\x00\xff\x10",
        "subscription_identifier": 300,  # a two-byte variable byte integer
        "user_property": [("site", "a"), ("site", "b"), ("rack", "7")],
    }
    encoded = p.encode_properties(properties)
    # paho decodes the same bytes to the same values.
    assert paho_properties(PacketTypes.PUBLISH, encoded) == {
        "PayloadFormatIndicator": 1,
        "MessageExpiryInterval": 3600,
        "ContentType": "application/json",
        "ResponseTopic": "reply/here",
        "CorrelationData": "00ff10",  # paho's json() gives binary as hex
        "SubscriptionIdentifier": [300],
        "UserProperty": [("site", "a"), ("site", "b"), ("rack", "7")],
    }
    for qos, packet_id in ((0, b""), (1, b"\x00\x01")):
        body = s("t") + packet_id + encoded + BINARY
        message = p.parse_publish(0x30 | qos << 1, body)
        assert message.properties == properties
        assert message.payload == BINARY


@pytest.mark.parametrize(
    ("first", "body", "why"),
    [
        (0x36, s("t") + b"\x00\x01\x00", "QoS 3"),
        (0x32, s("t") + b"\x00\x00\x00", "packet identifier 0"),
        (0x30, s("t") + b"\x03\x23\x00\x01", "topic alias"),
        (0x30, b"\x00\x02\xff\xfe\x00", "UTF-8"),
        (0x30, s("") + b"\x00", "without a topic"),
        (0x30, b"\x00", "ends in the middle"),  # half a topic length
        (0x30, b"\x00\x05ab", "ends in the middle"),  # topic longer than the body
        (0x32, s("t") + b"\x00", "ends in the middle"),  # half a packet identifier
        (0x30, s("t"), "variable byte integer"),  # no property length at all
        (0x30, s("t") + b"\x09\x02\x00", "past the end"),  # properties longer than body
        (0x30, s("t") + b"\x02\x02\x00\x00\x00\x01", "past the properties"),  # overruns
        (0x30, s("t") + b"\x01\x7f", "unknown property 0x7F"),
    ],
)
def test_parse_publish_rejects(first: int, body: bytes, why: str) -> None:
    with pytest.raises(MalformedPacket, match=why):
        p.parse_publish(first, body)


# --- CONNECT ---------------------------------------------------------------------------


def test_connect_layout_field_by_field() -> None:
    packet = p.connect(
        "dev-1", keepalive_s=30, clean_start=True, username="user", password="pw",
        will=Will("mw/status", b"\x00gone", qos=1, retain=True),
        properties={"session_expiry_interval": 3600, "receive_maximum": 5})
    # Section 3.1.2: protocol name, version 5, connect flags, keep alive, properties.
    flags = 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04 | 0x02  # user, pw, will retain/qos/flag, clean
    properties = b"\x11\x00\x00\x0e\x10" + b"\x21\x00\x05"  # session expiry 3600, receive max 5
    variable_header = s("MQTT") + b"\x05" + bytes((flags,)) + b"\x00\x1e" + b"\x08" + properties
    # Section 3.1.3: client id, will properties, will topic, will payload, user, password.
    payload = (s("dev-1") + b"\x00" + s("mw/status") + b"\x00\x05\x00gone" + s("user")
               + s("pw"))
    body = variable_header + payload
    assert packet == b"\x10" + bytes((len(body),)) + body

    # And read back field by field, the properties through paho.
    assert packet[0] == 0x10
    assert packet[2:8] == b"\x00\x04MQTT"
    assert packet[8] == 5
    assert packet[9] == 0xEE
    assert int.from_bytes(packet[10:12], "big") == 30
    length = packet[12]
    assert paho_properties(PacketTypes.CONNECT, packet[12:13 + length]) == {
        "SessionExpiryInterval": 3600, "ReceiveMaximum": 5}


def test_connect_minimal() -> None:
    # Empty client id (server assigns one), no keep-alive, resume the session, nothing else.
    body = s("MQTT") + b"\x05\x00\x00\x00" + b"\x00" + s("")
    assert p.connect("", keepalive_s=0, clean_start=False) == b"\x10\x0d" + body


@pytest.mark.parametrize(
    ("will", "flags"),
    [
        (Will("w", b"x", qos=0, retain=False), 0x04),
        (Will("w", b"x", qos=1, retain=False), 0x0C),
        (Will("w", b"x", qos=2, retain=False), 0x14),
        (Will("w", b"x", qos=0, retain=True), 0x24),
        (Will("w", b"x"), 0x2C),  # the defaults: QoS 1, retained
    ],
)
def test_connect_will_flags(will: Will, flags: int) -> None:
    packet = p.connect("c", keepalive_s=60, clean_start=False, will=will)
    assert packet[9] == flags
    assert int.from_bytes(packet[10:12], "big") == 60
    assert packet[12] == 0  # no connect properties
    assert packet[13:] == s("c") + b"\x00" + s("w") + b"\x00\x01x"


def test_connect_password_without_username() -> None:
    # MQTT 5 allows a password without a user name (section 3.1.2.9).
    packet = p.connect("c", keepalive_s=1, clean_start=True, password="sécret")
    assert packet[9] == 0x40 | 0x02
    assert packet[13:] == s("c") + s("sécret")


# --- SUBSCRIBE, UNSUBSCRIBE, PUBACK, DISCONNECT ------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "byte"),
    [
        (Subscription("t", qos=0), 0x00),
        (Subscription("t"), 0x01),
        (Subscription("t", qos=2), 0x02),
        (Subscription("t", qos=0, no_local=True), 0x04),
        (Subscription("t", qos=0, retain_as_published=True), 0x08),
        (Subscription("t", qos=0, retain_handling=1), 0x10),
        (Subscription("t", qos=0, retain_handling=2), 0x20),
        (Subscription("t", qos=1, no_local=True, retain_as_published=True,
                      retain_handling=2), 0x2D),
    ],
)
def test_subscription_options_byte(subscription: Subscription, byte: int) -> None:
    assert subscription.options() == byte
    # paho reads the byte back into the same options.
    options = SubscribeOptions()
    options.unpack(bytes((byte,)))
    assert (options.QoS, options.noLocal, options.retainAsPublished, options.retainHandling) == (
        subscription.qos, subscription.no_local, subscription.retain_as_published,
        subscription.retain_handling)


def test_subscribe_layout() -> None:
    packet = p.subscribe(0x0107, [Subscription("a/+"), Subscription("b/#", qos=0, no_local=True,
                                                                      retain_handling=2)])
    # Section 3.8: fixed header 0x82 (reserved bits 0010), packet id, properties, then
    # each filter followed by its options byte.
    body = b"\x01\x07" + b"\x00" + s("a/+") + b"\x01" + s("b/#") + b"\x24"
    assert packet == b"\x82" + bytes((len(body),)) + body


def test_unsubscribe_layout() -> None:
    body = b"\x00\x08" + b"\x00" + s("a/+") + s("b")
    assert p.unsubscribe(8, ["a/+", "b"]) == b"\xa2" + bytes((len(body),)) + body


def test_puback_disconnect_pingreq() -> None:
    assert p.puback(0x1234) == b"\x40\x02\x12\x34"
    assert p.puback(0xFFFF) == b"\x40\x02\xff\xff"
    assert p.disconnect() == b"\xe0\x00"
    assert p.disconnect(0x04) == b"\xe0\x02\x04\x00"
    assert p.PINGREQ_PACKET == b"\xc0\x00"


# --- properties --------------------------------------------------------------------------


def test_encode_properties_empty() -> None:
    assert p.encode_properties() == b"\x00"
    assert p.encode_properties({}) == b"\x00"


def test_encode_properties_of_every_kind_round_trip() -> None:
    connack_properties = {
        "session_expiry_interval": 0xFFFFFFFF,
        "receive_maximum": 20,
        "maximum_qos": 1,
        "retain_available": 1,
        "maximum_packet_size": 1 << 20,
        "assigned_client_identifier": "auto-1",
        "topic_alias_maximum": 10,
        "reason_string": "fine",
        "user_property": [("a", "1"), ("a", "2")],
        "wildcard_subscription_available": 1,
        "subscription_identifier_available": 0,
        "shared_subscription_available": 1,
        "server_keep_alive": 15,
        "response_information": "resp/",
        "server_reference": "other:1883",
        "authentication_method": "SCRAM",
        "authentication_data": b"\x00\x01\x02",
    }
    encoded = p.encode_properties(connack_properties)
    assert paho_properties(PacketTypes.CONNACK, encoded) == {
        "SessionExpiryInterval": 0xFFFFFFFF, "ReceiveMaximum": 20, "MaximumQoS": 1,
        "RetainAvailable": 1, "MaximumPacketSize": 1 << 20,
        "AssignedClientIdentifier": "auto-1", "TopicAliasMaximum": 10, "ReasonString": "fine",
        "UserProperty": [("a", "1"), ("a", "2")], "WildcardSubscriptionAvailable": 1,
        "SubscriptionIdentifierAvailable": 0, "SharedSubscriptionAvailable": 1,
        "ServerKeepAlive": 15, "ResponseInformation": "resp/",
        "ServerReference": "other:1883", "AuthenticationMethod": "SCRAM",
        "AuthenticationData": b"\x00\x01\x02",  # json() leaves this one as bytes
    }
    assert p.parse_connack(b"\x00\x00" + encoded).properties == connack_properties


# --- what the server sends ----------------------------------------------------------------


def test_parse_connack_with_properties() -> None:
    props = (b"\x13\x00\x3c"  # server keep alive 60
             + b"\x12" + s("auto-abc")  # assigned client identifier
             + b"\x1f" + s("welcome"))  # reason string
    connack = p.parse_connack(b"\x01\x00" + bytes((len(props),)) + props)
    assert connack.session_present is True
    assert connack.reason == 0
    assert connack.properties == {"server_keep_alive": 60,
                                  "assigned_client_identifier": "auto-abc",
                                  "reason_string": "welcome"}


def test_parse_connack_short_and_refused() -> None:
    assert p.parse_connack(b"\x00\x00") == p.Connack(False, 0, {})
    assert p.parse_connack(b"\x00\x87\x00") == p.Connack(False, 0x87, {})
    with pytest.raises(MalformedPacket):
        p.parse_connack(b"\x00")
    with pytest.raises(MalformedPacket):
        p.parse_connack(b"\x00\x00\x05\x13")  # properties longer than the packet


def test_parse_ack_puback_forms() -> None:
    # Section 3.4.2.1: reason code and properties may be left out.
    assert p.parse_ack(p.PUBACK, b"\x00\x05") == p.Ack(5, (0,), {})
    assert p.parse_ack(p.PUBACK, b"\x00\x05\x10") == p.Ack(5, (0x10,), {})
    props = b"\x1f" + s("no such topic")
    assert p.parse_ack(p.PUBACK, b"\xff\xfe\x87" + bytes((len(props),)) + props) == p.Ack(
        0xFFFE, (0x87,), {"reason_string": "no such topic"})
    with pytest.raises(MalformedPacket):
        p.parse_ack(p.PUBACK, b"\x00")


def test_parse_ack_suback_and_unsuback() -> None:
    suback = p.parse_ack(p.SUBACK, b"\x00\x09\x00\x01\x00\x02\x87\x8f")
    assert suback == p.Ack(9, (1, 0, 2, 0x87, 0x8F), {})
    props = b"\x26" + s("k") + s("v")
    suback = p.parse_ack(p.SUBACK, b"\x00\x09" + bytes((len(props),)) + props + b"\x01")
    assert suback == p.Ack(9, (1,), {"user_property": [("k", "v")]})
    assert p.parse_ack(p.UNSUBACK, b"\x00\x0a\x00\x00\x11") == p.Ack(10, (0, 0x11), {})
    with pytest.raises(MalformedPacket, match="without reason codes"):
        p.parse_ack(p.SUBACK, b"\x00\x09\x00")
    with pytest.raises(MalformedPacket):
        p.parse_ack(p.SUBACK, b"\x00\x09")  # no property length


def test_parse_disconnect() -> None:
    # Section 3.14.2.1: an empty body means reason 0, no properties.
    assert p.parse_disconnect(b"") == (0, {})
    assert p.parse_disconnect(b"\x8b") == (0x8B, {})
    assert p.parse_disconnect(b"\x04\x00") == (0x04, {})
    props = b"\x1f" + s("maintenance") + b"\x1c" + s("other:1883")
    assert p.parse_disconnect(b"\x9c" + bytes((len(props),)) + props) == (
        0x9C, {"reason_string": "maintenance", "server_reference": "other:1883"})
    with pytest.raises(MalformedPacket):
        p.parse_disconnect(b"\x8b\x05\x1f")


def test_reason_text() -> None:
    assert p.reason_text(0x87) == "0x87 not authorized"
    assert p.reason_text(0x00) == "0x00 success"
    assert p.reason_text(0x8B, {"reason_string": "bye"}) == "0x8B server shutting down (bye)"
    assert p.reason_text(0x8B, {"server_keep_alive": 5}) == "0x8B server shutting down"
    assert p.reason_text(0x42) == "0x42 unknown reason"


# paho words these three differently from the standard's table (section 2.4), which we follow.
PAHO_WORDING = {0x11, 0x9E, 0xA2}


@pytest.mark.parametrize("code", sorted(set(p.REASONS) - PAHO_WORDING))
def test_reason_names_agree_with_paho(code: int) -> None:
    names = set()
    for packet_type in range(1, 16):
        try:
            names.add(ReasonCode(packet_type, identifier=code).getName().lower())
        except (KeyError, ValueError):
            continue  # not a reason code of that packet type
    assert p.REASONS[code].lower() in names


# --- what a CONNACK allows -----------------------------------------------------------------


def test_server_limits_defaults_and_values() -> None:
    # Section 3.2.2.3: an absent property means no limit beyond the protocol's.
    assert p.server_limits({}) == p.ServerLimits(65535, 2, True, None)
    connack = p.parse_connack(b"\x00\x00\x0c" + b"\x21\x00\x14" + b"\x24\x00" + b"\x25\x00"
                              + b"\x27\x00\x10\x00\x00")
    assert p.server_limits(connack.properties) == p.ServerLimits(20, 0, False, 1 << 20)


@pytest.mark.parametrize("properties", [
    {"receive_maximum": 0}, {"maximum_qos": 2}, {"maximum_qos": 3},
    {"retain_available": 2}, {"maximum_packet_size": 0},
])
def test_server_limits_refuses_what_the_standard_forbids(properties: dict[str, int]) -> None:
    with pytest.raises(MalformedPacket) as caught:
        p.server_limits(properties)
    assert caught.value.reason == p.PROTOCOL_ERROR


def test_malformed_packets_carry_the_reason_code_to_disconnect_with() -> None:
    with pytest.raises(MalformedPacket) as caught:
        p.split_packet(p.publish("t", b"x" * 100), 0, 50)
    assert caught.value.reason == p.PACKET_TOO_LARGE == 0x95
    with pytest.raises(MalformedPacket) as caught:
        p.parse_publish(0x30, s("t") + b"\x03\x23\x00\x01")
    assert caught.value.reason == p.TOPIC_ALIAS_INVALID == 0x94
    with pytest.raises(MalformedPacket) as caught:
        p.parse_publish(0x30, b"\x00\x02\xff\xfe\x00")
    assert caught.value.reason == p.MALFORMED == 0x81
    assert p.disconnect(p.DISCONNECT_WITH_WILL) == b"\xe0\x02\x04\x00"
