"""Unit tests of request keys, on stand-in requests without a server."""

import ipaddress
from dataclasses import dataclass, field

import pytest
from sanic.compat import Header

from fastlimit.keys import (
    ClientAddress,
    CompositeKey,
    HeaderKey,
    IpKey,
    PathKey,
    QueryKey,
    normalise_spec,
    parse_address,
    parse_key,
)


@dataclass
class FakeRequest:
    """The attributes of sanic.Request that key functions read."""

    raw_url: bytes = b"/"
    ip: str = "127.0.0.1"
    remote_addr: str = ""
    headers: Header = field(default_factory=Header)


def request_with_headers(**headers):
    return FakeRequest(headers=Header(headers))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:1.2.3.4", "1.2.3.4"),
        ("::ffff:0102:0304", "1.2.3.4"),
        ("0:0:0:0:0:ffff:1.2.3.4", "1.2.3.4"),
        ("0000:0000:0000:0000:0000:ffff:0102:0304", "1.2.3.4"),
        ("[::ffff:1.2.3.4]", "1.2.3.4"),
        ("[::ffff:1.2.3.4]:443", "1.2.3.4"),
        ("::ffff:1.2.3.4%eth0", "1.2.3.4"),
        ("[::ffff:1.2.3.4%eth0]:80", "1.2.3.4"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:DB8::1]", "2001:db8::1"),
        ("[2001:db8::1]:8080", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("::1", "::1"),
    ],
)
def test_parse_address_spellings(text, expected):
    assert parse_address(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unknown",
        "_hidden",
        "/run/app.sock",
        "1.2.3",
        "1.2.3.4:port",
        "999.1.1.1",
        "[::1",
        "[::1]x",
        "[::1]:",
        "not an address",
        "1.2.3.4\x00",
    ],
)
def test_parse_address_rejects(text):
    assert parse_address(text) is None


def ip_key(prefix=64, forwarded=True):
    return IpKey(ClientAddress(forwarded=forwarded), prefix)


def test_ip_key_mapped_equals_ipv4():
    key = ip_key()
    plain = key(FakeRequest(ip="1.2.3.4"))
    for spelling in ("::ffff:1.2.3.4", "::ffff:0102:0304", "0:0:0:0:0:ffff:1.2.3.4"):
        assert key(FakeRequest(ip=spelling)) == plain


def test_ip_key_distinct_ipv4():
    key = ip_key()
    assert key(FakeRequest(ip="1.2.3.4")) != key(FakeRequest(ip="1.2.3.5"))


def test_ip_key_groups_ipv6_by_64():
    key = ip_key()
    first = key(FakeRequest(ip="2001:db8:0:1::1"))
    same_network = key(FakeRequest(ip="2001:db8:0:1:ffff:ffff:ffff:ffff"))
    other_network = key(FakeRequest(ip="2001:db8:0:2::1"))
    assert first == same_network
    assert first != other_network


def test_ip_key_prefix_128_is_per_address():
    key = ip_key(prefix=128)
    assert key(FakeRequest(ip="2001:db8::1")) != key(FakeRequest(ip="2001:db8::2"))


def test_ip_key_prefix_48():
    key = ip_key(prefix=48)
    assert key(FakeRequest(ip="2001:db8:0:1::1")) == key(FakeRequest(ip="2001:db8:0:2::1"))
    assert key(FakeRequest(ip="2001:db8:0::1")) != key(FakeRequest(ip="2001:db8:1::1"))


@pytest.mark.parametrize("prefix", [0, 129, -1])
def test_ip_key_rejects_prefix(prefix):
    with pytest.raises(ValueError, match="IPv6 prefix"):
        ip_key(prefix=prefix)


def test_ip_key_unknown_address_bucket():
    key = ip_key()
    unknown = key(FakeRequest(ip=""))
    assert unknown
    assert key(FakeRequest(ip="garbage")) == unknown
    assert unknown != key(FakeRequest(ip="0.0.0.0"))
    assert unknown != key(FakeRequest(ip="::"))


def test_ip_key_uses_trusted_forwarded_address():
    key = ip_key()
    forwarded = key(FakeRequest(ip="127.0.0.1", remote_addr="203.0.113.7"))
    direct = key(FakeRequest(ip="203.0.113.7"))
    assert forwarded == direct


def test_ip_key_ignores_forwarded_when_untrusted():
    key = ip_key(forwarded=False)
    forwarded = key(FakeRequest(ip="127.0.0.1", remote_addr="203.0.113.7"))
    assert forwarded == key(FakeRequest(ip="127.0.0.1"))


def test_ip_key_forwarded_garbage_is_unknown():
    key = ip_key()
    assert key(FakeRequest(ip="127.0.0.1", remote_addr="_hidden")) == key(
        FakeRequest(ip="")
    )


def test_ip_key_cache_stays_bounded():
    key = ip_key()
    for index in range(20000):
        key(FakeRequest(ip=f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}"))
    assert len(key._cache) <= 8192
    assert key(FakeRequest(ip="10.0.0.1")) == key(FakeRequest(ip="10.0.0.1"))


def query(raw_url):
    return QueryKey("q")(FakeRequest(raw_url=raw_url))


def test_query_key_plain_value():
    assert query(b"/?q=abc") == query(b"/search?x=1&q=abc")


def test_query_key_percent_and_plus():
    assert query(b"/?q=a%20b") == query(b"/?q=a+b")
    assert query(b"/?q=a%2Bb") != query(b"/?q=a+b")
    assert query(b"/?%71=abc") == query(b"/?q=abc")


def test_query_key_first_non_empty_value():
    assert query(b"/?q=a&q=b") == query(b"/?q=a")
    assert query(b"/?q=&q=b") == query(b"/?q=b")
    assert query(b"/?q&q=b") == query(b"/?q=b")


def test_query_key_missing_bucket():
    missing = query(b"/")
    assert missing
    assert query(b"/?") == missing
    assert query(b"/?q=") == missing
    assert query(b"/?q") == missing
    assert query(b"/?qq=abc") == missing
    assert query(b"/?Q=abc") == missing


def test_query_key_missing_differs_from_values():
    missing = query(b"/")
    for value in (b"-", b"%2D", b"", b"missing", b"%00"):
        if value:
            assert query(b"/?q=" + value) != missing


def test_query_key_ignores_fragment():
    assert query(b"/?q=abc#frag") == query(b"/?q=abc")


def test_query_key_long_value():
    long_value = b"x" * 60000
    key = query(b"/?q=" + long_value)
    assert key.endswith(long_value)
    assert key != query(b"/?q=" + long_value + b"y")


def test_query_key_invalid_utf8_accepted():
    raw = query(b"/?q=\xff\xfe")
    escaped = query(b"/?q=%ff%fe")
    assert raw == escaped
    assert raw != query(b"/")


def test_query_key_invalid_utf8_matches_replacement():
    # Sanic's request.args decodes both to U+FFFD, so they share a bucket.
    assert query(b"/?q=%ff") == query(b"/?q=%fe")
    assert query(b"/?q=%ff") == query(b"/?q=%EF%BF%BD")


def test_query_key_unicode_name():
    key = QueryKey("ключ")
    assert key(FakeRequest(raw_url=b"/?%D0%BA%D0%BB%D1%8E%D1%87=1")) != key(
        FakeRequest(raw_url=b"/")
    )


def test_header_key_case_insensitive_name():
    key = HeaderKey("X-Api-Key")
    assert key(request_with_headers(**{"x-api-key": "abc"})) == key(
        request_with_headers(**{"X-API-KEY": "abc"})
    )


def test_header_key_values_distinct():
    key = HeaderKey("x-api-key")
    assert key(request_with_headers(**{"x-api-key": "abc"})) != key(
        request_with_headers(**{"x-api-key": "abd"})
    )


def test_header_key_missing_bucket():
    key = HeaderKey("x-api-key")
    missing = key(FakeRequest())
    assert missing
    assert key(request_with_headers(**{"x-api-key": ""})) == missing
    assert key(request_with_headers(**{"x-api-key": "-"})) != missing


def test_header_key_raw_bytes():
    key = HeaderKey("x-api-key")
    value = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert key(request_with_headers(**{"x-api-key": value})).endswith(b"\xff\xfe")


def test_path_key_decodes():
    key = PathKey()
    assert key(FakeRequest(raw_url=b"/a%62c?x=1")) == key(FakeRequest(raw_url=b"/abc"))
    assert key(FakeRequest(raw_url=b"/abc/")) != key(FakeRequest(raw_url=b"/abc"))
    assert key(FakeRequest(raw_url=b"/\xff")) == key(FakeRequest(raw_url=b"/%ff"))


def test_composite_parts_not_confusable():
    key = parse_key("query:a+query:b")
    first = key(FakeRequest(raw_url=b"/?a=x&b=yz"))
    second = key(FakeRequest(raw_url=b"/?a=xy&b=z"))
    assert first != second


def test_composite_missing_not_confusable():
    key = parse_key("query:a+query:b")
    only_a = key(FakeRequest(raw_url=b"/?a=x"))
    only_b = key(FakeRequest(raw_url=b"/?b=x"))
    assert only_a != only_b


def test_composite_ip_and_query():
    key = parse_key("ip+query:q")
    assert isinstance(key, CompositeKey)
    base = key(FakeRequest(ip="1.2.3.4", raw_url=b"/?q=a"))
    assert base != key(FakeRequest(ip="1.2.3.5", raw_url=b"/?q=a"))
    assert base != key(FakeRequest(ip="1.2.3.4", raw_url=b"/?q=b"))
    assert base == key(FakeRequest(ip="::ffff:1.2.3.4", raw_url=b"/?q=a&q=c"))


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("ip", "ip"),
        (" IP ", "ip"),
        ("query:q", "query:q"),
        ("Query:Q", "query:Q"),
        ("header:X-Api-Key", "header:x-api-key"),
        ("ip + query:q", "ip+query:q"),
        ("path+header:Authorization", "path+header:authorization"),
    ],
)
def test_normalise_spec(spec, expected):
    assert normalise_spec(spec) == expected
    assert parse_key(spec).spec == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown part ''"),
        ("cookie:session", "unknown part 'cookie:session'"),
        ("ipv4", "unknown part 'ipv4'"),
        ("ip+", "unknown part ''"),
        ("query", "unknown part 'query'"),
        ("query:", "is missing"),
        ("header:", "is missing"),
        ("query:a b", "spaces or control characters"),
        ("ip:1", "unknown part 'ip:1'"),
        ("ip+ip", "repeated"),
    ],
)
def test_parse_key_rejects(spec, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_key(spec)
    assert repr(spec) in str(caught.value)


def test_parse_key_error_lists_allowed():
    with pytest.raises(ValueError) as caught:
        parse_key("cookie:x")
    for allowed in ("ip", "query:NAME", "header:NAME", "path"):
        assert allowed in str(caught.value)


def test_parse_key_rejects_non_str():
    with pytest.raises(TypeError):
        parse_key(None)
