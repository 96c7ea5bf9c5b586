"""Tests of fastlimit.sanic: rules, the decorators and error handling.

The decorator tests run tests/sanic_app.py, an app that uses the library
directly, as a 2-worker subprocess.
"""

import ipaddress
import os
import sys

import pytest
import urllib.error
import urllib.request

from fastlimit import InvalidLimit, Policy
from fastlimit.sanic import Rule, as_rules, parse_allowlist
from serverproc import REPOSITORY, ServerProcess

APP = os.path.join(REPOSITORY, "tests", "sanic_app.py")


def test_rule_defaults():
    rule = Rule()
    assert rule.key == "ip"
    assert rule.name == "ip"
    assert rule.limits == (Policy(100, 1.0),)


def test_rule_normalises_key_and_parses_limits():
    rule = Rule(" IP + Query:q ", "10/second; 1000/hour")
    assert rule.key == "ip+query:q"
    assert rule.name == "ip+query:q"
    assert rule.limits == (Policy(10, 1.0), Policy(1000, 3600.0))
    assert str(rule) == "ip+query:q=10/second; 1000/hour"


def test_rule_named():
    rule = Rule("ip", "1/second", name="burst")
    assert str(rule) == "burst (ip)=1/second"


def test_rule_rejects_bad_values():
    with pytest.raises(InvalidLimit, match="'10/horu'"):
        Rule("ip", "10/horu")
    with pytest.raises(ValueError, match="'cookie'"):
        Rule("cookie", "10/second")
    with pytest.raises(TypeError):
        Rule("ip", [])
    with pytest.raises(ValueError, match="rule name"):
        Rule("ip", "1/second", name="a\nb")


def test_as_rules_forms():
    assert as_rules(None) == ()
    assert as_rules([]) == ()
    assert as_rules("5/minute", key="path") == (Rule("path", "5/minute"),)
    assert as_rules([("ip", "1/second"), Rule("path", "2/second")]) == (
        Rule("ip", "1/second"),
        Rule("path", "2/second"),
    )


def test_as_rules_rejects_duplicate_names():
    with pytest.raises(ValueError, match="'ip' is used twice"):
        as_rules([("ip", "1/second"), ("ip", "1/hour")])
    rules = as_rules([("ip", "1/second"), Rule("ip", "1/hour", name="hourly")])
    assert len(rules) == 2


def test_as_rules_rejects_other_types():
    with pytest.raises(TypeError, match="invalid rule"):
        as_rules([42])


def test_parse_allowlist():
    networks = parse_allowlist("10.0.0.0/8, ::1, 192.168.1.7")
    assert networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    assert parse_allowlist("") == ()


def test_parse_allowlist_maps_ipv4_mapped_ranges():
    assert parse_allowlist(["::ffff:10.0.0.0/104"]) == (
        ipaddress.ip_network("10.0.0.0/8"),
    )


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "banana", "1.2.3.4/x"])
def test_parse_allowlist_rejects(entry):
    with pytest.raises(ValueError, match=repr(entry)):
        parse_allowlist(entry)


def test_attach_twice_rejected():
    from sanic import Sanic

    from fastlimit.sanic import attach

    app = Sanic("fastlimit_attach_twice")
    attach(app, "1/second")
    with pytest.raises(RuntimeError, match="already attached"):
        attach(app, "1/second")


def test_attach_rejects_bad_options():
    from sanic import Sanic

    from fastlimit.sanic import attach

    app = Sanic("fastlimit_bad_options")
    with pytest.raises(ValueError, match="on_error"):
        attach(app, "1/second", on_error="ignore")
    with pytest.raises(ValueError, match="IPv6 prefix"):
        attach(app, "1/second", ipv6_prefix=0)
    with pytest.raises(ValueError, match="allowlist"):
        attach(app, "1/second", allow="nonsense")


# The decorators, end to end


def get(server, path, headers=None):
    request = urllib.request.Request(server.url(path), headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture
def app_server(tmp_path):
    def start(env=None):
        environment = {"TEST_TABLE": str(tmp_path / "app.table"), **(env or {})}
        server = ServerProcess(
            environment, workers=2, command=[sys.executable, APP], cwd=REPOSITORY
        )
        servers.append(server)
        return server.start()

    servers = []
    yield start
    for server in servers:
        server.close()


@pytest.mark.slow
def test_route_rule_adds_to_app_rule(app_server):
    server = app_server()
    assert get(server, "/search?q=a")[0] == 200
    status, headers, _ = get(server, "/search?q=a")
    assert status == 200
    assert headers["X-RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Policy"] == (
        '"ip 3/day";q=3;w=86400, "query:q 2/day";q=2;w=86400'
    )
    assert get(server, "/search?q=a")[0] == 429
    # The rejected request got its ip count back: the app-wide ip=3/day
    # has one request left, which q=b takes.
    assert get(server, "/search?q=b")[0] == 200
    assert get(server, "/")[0] == 429


@pytest.mark.slow
def test_stacked_route_rules(app_server):
    server = app_server()
    client = {"X-Client": "one"}
    status, headers, _ = get(server, "/twice", client)
    assert status == 200
    assert headers["X-RateLimit-Limit"] == "1"
    assert "tight 1/day" in headers["RateLimit"]
    status, headers, body = get(server, "/twice", client)
    assert status == 429
    assert b'"limit":"1/day"' in body
    assert get(server, "/twice", {"X-Client": "two"})[0] == 200


@pytest.mark.slow
def test_same_rule_on_two_routes_counted_apart(app_server):
    server = app_server()
    assert get(server, "/same-a")[0] == 200
    assert get(server, "/same-b")[0] == 200
    assert get(server, "/same-a")[0] == 429
    assert get(server, "/same-b")[0] == 429


@pytest.mark.slow
def test_exempt_route(app_server):
    server = app_server()
    for _ in range(6):
        status, headers, _ = get(server, "/free")
        assert status == 200
        assert "X-RateLimit-Remaining" not in headers
    assert get(server, "/")[0] == 200


@pytest.mark.slow
def test_limiter_error_logged_and_allowed(app_server):
    server = app_server()
    # Each worker must close its own limiters, so break both.
    broken = set()
    for _ in range(40):
        status, _, body = get(server, "/break")
        assert status == 200
        broken.add(body)
        if len(broken) == 2:
            break
    assert len(broken) == 2
    for _ in range(5):
        status, headers, _ = get(server, "/")
        assert status == 200
        assert "X-RateLimit-Remaining" not in headers
    output = server.output()
    assert "WARNING fastlimit.sanic" in output
    assert "rate limit check failed on GET /" in output
    assert "is closed" in output
    # Repeats within the interval are counted, not logged.
    assert output.count("rate limit check failed") <= 2


@pytest.mark.slow
def test_limiter_error_raised_when_asked(app_server):
    server = app_server({"TEST_ON_ERROR": "raise"})
    broken = set()
    for _ in range(40):
        broken.add(get(server, "/break")[2])
        if len(broken) == 2:
            break
    assert get(server, "/")[0] == 500
    assert "rate limit check failed on GET /" in server.output()
