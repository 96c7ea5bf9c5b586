"""Request keys: which client, value or path a rule counts requests for.

A key spec names the parts of a request that form the key, joined with "+":

    ip              the client address (see ClientAddress)
    query:NAME      the first non-empty value of query parameter NAME
    header:NAME     the first value of header NAME (the name is case-insensitive)
    path            the request path

A key function built from a spec takes a Sanic request and returns bytes.
It never raises for request content and never returns an empty key, because
every part has a bucket for requests that lack it:

- `ip`: requests with no usable address (no peer address as on a unix
  socket, or a trusted forwarded address that is not an IP address) share
  one "unknown address" bucket.
- `query:NAME` and `header:NAME`: requests where the value is missing or
  empty share one "missing" bucket, distinct from every real value.

Each part starts with a tag byte that tells a missing value from a present
one, and a key of several parts frames each part with its length, so the
parts of two different requests can never combine into the same key.
"""

import ipaddress
from urllib.parse import unquote_to_bytes

KEY_SPECS = ("ip", "query:NAME", "header:NAME", "path")
DEFAULT_IPV6_PREFIX = 64

# Tag bytes that start each encoded part.
_IPV4 = b"4"
_IPV6 = b"6"
_UNKNOWN_ADDRESS = b"?"
_PRESENT = b"="
_MISSING = b"-"
_PATH = b"/"

# Bound on the per-worker cache of parsed address strings. One entry costs
# a few hundred bytes, and the cache is cleared whole when it is full.
_ADDRESS_CACHE_SIZE = 8192


def _allowed_specs():
    return ", ".join(KEY_SPECS)


def _decode_component(raw):
    """Percent-decode a query or path component as Sanic's request.args does.

    "+" becomes a space, %XX escapes become bytes, and byte sequences that
    are not valid UTF-8 become U+FFFD, so values that the application cannot
    tell apart share one key.
    """
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    return raw.decode("utf-8", "replace").encode("utf-8")


def parse_address(text):
    """Parse a client address as Sanic reports it into an ip_address object.

    Accepts an IPv4 address, an IPv6 address with or without brackets, either
    with a port (`1.2.3.4:80`, `[::1]:80`), and an IPv6 zone (`fe80::1%eth0`,
    dropped). An IPv4-mapped IPv6 address in any spelling returns the IPv4
    address. Returns None for anything else, including "" and the obfuscated
    identifiers (`_hidden`) that the Forwarded header allows.
    """
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        host = text[1:end]
        rest = text[end + 1 :]
        if rest and not (rest[0] == ":" and rest[1:].isdigit()):
            return None
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
        if not port.isdigit():
            return None
    else:
        host = text
    host = host.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddress:
    """The client address of a request, parsed and cached.

    With `forwarded=True` the address comes from `request.remote_addr`, which
    Sanic fills from the Forwarded, X-Forwarded-For or real-IP header only as
    far as the app's FORWARDED_SECRET, PROXIES_COUNT and REAL_IP_HEADER
    trust them. When no trusted header gives an address, the peer address
    of the connection (`request.ip`) is used. With `forwarded=False` only
    the peer address counts.
    """

    __slots__ = ("forwarded", "_cache")

    def __init__(self, forwarded=True):
        self.forwarded = forwarded
        self._cache = {}

    def text(self, request):
        """Return the address string that the key and the allowlist use."""
        if self.forwarded:
            address = request.remote_addr
            if address:
                return address
        return request.ip

    def parse(self, text):
        """Return parse_address(text), cached for repeated clients."""
        cache = self._cache
        try:
            return cache[text]
        except KeyError:
            pass
        address = parse_address(text)
        if len(cache) >= _ADDRESS_CACHE_SIZE:
            cache.clear()
        cache[text] = address
        return address

    def __call__(self, request):
        """Return the client's IPv4Address or IPv6Address, or None if unknown."""
        return self.parse(self.text(request))


class IpKey:
    """The key part for `ip`: the client address, IPv6 grouped by prefix."""

    spec = "ip"

    def __init__(self, client_address, ipv6_prefix=DEFAULT_IPV6_PREFIX):
        if isinstance(ipv6_prefix, bool) or not isinstance(ipv6_prefix, int):
            raise TypeError(
                f"ipv6_prefix must be an int, not {type(ipv6_prefix).__name__}"
            )
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(
                f"invalid IPv6 prefix length {ipv6_prefix!r}: use 1 to 128"
            )
        self.client_address = client_address
        self.ipv6_prefix = ipv6_prefix
        self._ipv6_mask = ((1 << ipv6_prefix) - 1) << (128 - ipv6_prefix)
        self._cache = {}

    def encode(self, address):
        """Return the key part of an address object, or of None (unknown)."""
        if address is None:
            return _UNKNOWN_ADDRESS
        if address.version == 4:
            return _IPV4 + address.packed
        network = int(address) & self._ipv6_mask
        return _IPV6 + network.to_bytes(16, "big")

    def __call__(self, request):
        text = self.client_address.text(request)
        cache = self._cache
        try:
            return cache[text]
        except KeyError:
            pass
        part = self.encode(self.client_address.parse(text))
        if len(cache) >= _ADDRESS_CACHE_SIZE:
            cache.clear()
        cache[text] = part
        return part


class QueryKey:
    """The key part for `query:NAME`: the first non-empty value of NAME.

    Works on the raw query bytes of the request target, so invalid UTF-8 and
    stray bytes never raise. Names and values are decoded the way Sanic's
    request.args decodes them: "+" is a space, %XX escapes are decoded, and
    invalid UTF-8 becomes U+FFFD. Blank values are skipped as request.args
    skips them, so `?q=&q=a` has the key of `?q=a`. A request with no
    non-empty value gets the "missing" bucket.
    """

    def __init__(self, name):
        self.name = name
        self.spec = f"query:{name}"
        self._name = name.encode("utf-8")

    def value(self, request):
        """Return the normalised value as bytes, or None if it is missing."""
        target = request.raw_url
        start = target.find(b"?")
        if start < 0:
            return None
        query = target[start + 1 :].partition(b"#")[0]
        for field in query.split(b"&"):
            name, _, value = field.partition(b"=")
            if not value:
                continue
            if _decode_component(name.replace(b"+", b" ")) != self._name:
                continue
            return _decode_component(value.replace(b"+", b" "))
        return None

    def __call__(self, request):
        value = self.value(request)
        if value is None:
            return _MISSING
        return _PRESENT + value


class HeaderKey:
    """The key part for `header:NAME`: the first value of the header.

    The name is case-insensitive. The value is taken byte for byte as the
    client sent it. A request without the header, or with an empty value,
    gets the "missing" bucket.
    """

    def __init__(self, name):
        self.name = name.lower()
        self.spec = f"header:{self.name}"

    def __call__(self, request):
        value = request.headers.getone(self.name, None)
        if not value:
            return _MISSING
        # Sanic decodes header bytes as UTF-8 with surrogateescape, so this
        # returns the bytes that the client sent.
        return _PRESENT + value.encode("utf-8", "surrogateescape")


class PathKey:
    """The key part for `path`: the request path, percent-decoded.

    The path is taken from the raw request target without the query, so
    `/a%62c` and `/abc` share a key. Byte sequences that are not valid UTF-8
    become U+FFFD. Other spellings (a trailing slash, doubled slashes) are
    distinct keys.
    """

    spec = "path"

    def __call__(self, request):
        path = request.raw_url.partition(b"?")[0].partition(b"#")[0]
        return _PATH + _decode_component(path)


class CompositeKey:
    """A key of several parts, each framed with its 4-byte length."""

    def __init__(self, parts):
        self.parts = tuple(parts)
        self.spec = "+".join(part.spec for part in self.parts)

    def __call__(self, request):
        framed = []
        for part in self.parts:
            data = part(request)
            framed.append(len(data).to_bytes(4, "big"))
            framed.append(data)
        return b"".join(framed)


def _check_name(spec, kind, name):
    if not name:
        raise ValueError(
            f"invalid key spec {spec!r}: the name after {kind}: is missing "
            f"(use {kind}:NAME)"
        )
    if not name.isprintable() or any(char.isspace() for char in name):
        raise ValueError(
            f"invalid key spec {spec!r}: the {kind} name {name!r} contains "
            "spaces or control characters"
        )


def split_spec(spec):
    """Split a key spec into normalised part specs, checking each.

    Returns a list such as ["ip", "query:q"]. Raises ValueError naming the
    spec and listing the allowed parts for an unknown or empty part.
    """
    if not isinstance(spec, str):
        raise TypeError(f"key spec must be a str, not {type(spec).__name__}")
    parts = []
    for raw_part in spec.split("+"):
        part = raw_part.strip()
        kind, colon, name = part.partition(":")
        kind = kind.lower()
        if not colon and kind in ("ip", "path"):
            parts.append(kind)
        elif colon and kind == "query":
            _check_name(spec, kind, name)
            parts.append(f"query:{name}")
        elif colon and kind == "header":
            _check_name(spec, kind, name)
            parts.append(f"header:{name.lower()}")
        else:
            raise ValueError(
                f"invalid key spec {spec!r}: unknown part {part!r} "
                f"(use {_allowed_specs()}, or several joined with +)"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"invalid key spec {spec!r}: a part is repeated")
    return parts


def normalise_spec(spec):
    """Return the canonical spelling of a key spec, such as "ip+query:q"."""
    return "+".join(split_spec(spec))


def parse_key(spec, *, ipv6_prefix=DEFAULT_IPV6_PREFIX, client_address=None):
    """Build the key function of a key spec such as "ip" or "ip+query:q".

    `client_address` is the ClientAddress that `ip` parts use (a new one
    that trusts the app's forwarded settings if None). The returned object
    is callable on a Sanic request and returns bytes, and its `spec`
    attribute is the normalised spec. Raises ValueError for an unknown spec.
    """
    if client_address is None:
        client_address = ClientAddress()
    parts = []
    for part in split_spec(spec):
        if part == "ip":
            parts.append(IpKey(client_address, ipv6_prefix))
        elif part == "path":
            parts.append(PathKey())
        elif part.startswith("query:"):
            parts.append(QueryKey(part[len("query:") :]))
        else:
            parts.append(HeaderKey(part[len("header:") :]))
    if len(parts) == 1:
        return parts[0]
    return CompositeKey(parts)
