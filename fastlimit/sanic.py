"""Rate limiting for Sanic apps.

    from fastlimit.sanic import attach, exempt, limit

    attach(app, "100/second", key="ip", table="/dev/shm/app.table")

    @app.get("/search")
    @limit("10/minute", key="query:q")
    async def search(request): ...

attach() adds app-wide rules and the listeners and middleware that apply
them. @limit adds a rule to one route, on top of the app-wide rules, and
@exempt takes a route out of every rule. A request must pass every rule
that applies to it. Each rule counts under its own namespace in one shared
table file, so counts are exact across all worker processes.

The table is created (or checked) in `main_process_start` and opened in
each worker in `before_server_start`, so nothing is mapped at import time
and spawned, forked and single-process servers all work. Rejected requests
are counted in the table statistics, not logged. Errors raised inside a
check are logged as warnings on the "fastlimit.sanic" logger, with repeats
rate-limited, and the request is let through unless on_error="raise".
"""

import ipaddress
import json
import logging
import os
import time
from dataclasses import dataclass
from multiprocessing import Value

from multidict import istr
from sanic.response import HTTPResponse

from .headers import HEADER_SETS, HeaderWriter, policy_field, policy_name
from .headers import retry_after_seconds, sf_string
from .errors import TableError
from .keys import DEFAULT_IPV6_PREFIX, ClientAddress, normalise_spec, parse_key
from .limiter import Limiter
from .policy import Policy, parse_many

logger = logging.getLogger("fastlimit.sanic")

EXEMPT_METHODS = ("OPTIONS",)
ON_ERROR = ("allow", "raise")

# Sanic runs request middleware with a higher priority first, so limits
# are checked before the app's own middleware does any work.
MIDDLEWARE_PRIORITY = 1000

# At most one warning per interval for repeated errors in checks.
ERROR_LOG_INTERVAL = 10.0

_RULES_ATTRIBUTE = "__fastlimit_rules__"
_EXEMPT_ATTRIBUTE = "__fastlimit_exempt__"


@dataclass(frozen=True)
class Rule:
    """A key spec and the limits that apply to each of its keys.

    `limits` is a str such as "10/second; 1000/hour", a Policy or a list of
    Policy, stored as a tuple of Policy. `name` identifies the rule in the
    RateLimit headers and separates its counts in the table. It defaults to
    the normalised key spec, so two rules with the same key spec need
    different names.
    """

    key: str = "ip"
    limits: object = "100/second"
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "key", normalise_spec(self.key))
        if isinstance(self.limits, str):
            policies = parse_many(self.limits)
        elif isinstance(self.limits, Policy):
            policies = [self.limits]
        else:
            policies = list(self.limits)
            if not policies or not all(isinstance(p, Policy) for p in policies):
                raise TypeError(
                    "rule limits must be a str, a Policy or a non-empty list "
                    f"of Policy, not {self.limits!r}"
                )
        object.__setattr__(self, "limits", tuple(policies))
        name = self.name or self.key
        if not name.isprintable():
            raise ValueError(f"invalid rule name {name!r}: use printable text")
        object.__setattr__(self, "name", name)

    def __str__(self):
        limits = "; ".join(str(policy) for policy in self.limits)
        if self.name == self.key:
            return f"{self.key}={limits}"
        return f"{self.name} ({self.key})={limits}"


def as_rules(rules, key="ip"):
    """Turn the `rules` argument of attach() into a tuple of Rule.

    Accepts a str of limits (one rule with key spec `key`), a Rule, a
    (key spec, limits) pair, or a list of these. None or [] gives no rule.
    """
    if rules is None:
        return ()
    if isinstance(rules, (str, Policy)):
        return (Rule(key, rules),)
    if isinstance(rules, Rule):
        return (rules,)
    result = []
    for rule in rules:
        if isinstance(rule, Rule):
            result.append(rule)
        elif isinstance(rule, tuple) and len(rule) == 2:
            result.append(Rule(*rule))
        else:
            raise TypeError(
                f"invalid rule {rule!r}: use a Rule or a (key spec, limits) pair"
            )
    names = [rule.name for rule in result]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f"invalid rules: the name {name!r} is used twice (give rules "
                "with the same key spec distinct names)"
            )
    return tuple(result)


def parse_allowlist(entries):
    """Parse CIDR ranges such as "10.0.0.0/8" or "::1" into networks.

    IPv4-mapped IPv6 ranges become the IPv4 ranges they map, because client
    addresses are compared after the same normalisation. Raises ValueError
    naming an invalid entry.
    """
    if isinstance(entries, str):
        entries = entries.split(",")
    networks = []
    for entry in entries:
        text = entry.strip() if isinstance(entry, str) else entry
        if text == "":
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError as error:
            raise ValueError(f"invalid allowlist entry {text!r}: {error}") from None
        mapped = ipaddress.ip_network("::ffff:0:0/96")
        if network.version == 6 and network.subnet_of(mapped):
            ipv4 = network.network_address.ipv4_mapped
            network = ipaddress.ip_network(f"{ipv4}/{network.prefixlen - 96}")
        networks.append(network)
    return tuple(networks)


def namespace(rule, route_name=None):
    """Return the table namespace of an app-wide rule or of a route's rule.

    NUL separates the parts, and rule names are printable, so no two
    rules share a namespace.
    """
    if route_name is None:
        return f"app\x00{rule.name}"
    return f"route\x00{route_name}\x00{rule.name}"


def limit(limits, key="ip", *, name=""):
    """Decorate a route handler with a rule of its own.

    The rule applies on top of the app-wide rules, and its counts are kept
    apart from other routes even when the rule is the same. Stacked
    decorators add one rule each. Raises InvalidLimit or ValueError at
    import time for bad limits or key specs.
    """
    rule = Rule(key, limits, name)

    def decorate(handler):
        rules = getattr(handler, _RULES_ATTRIBUTE, ())
        setattr(handler, _RULES_ATTRIBUTE, (rule, *rules))
        return handler

    return decorate


def exempt(handler):
    """Decorate a route handler so that no rule counts or limits it."""
    setattr(handler, _EXEMPT_ATTRIBUTE, True)
    return handler


class _BoundRule:
    """A rule with its key function and open limiter in one worker.

    `items` maps each policy to its identifier serialised for the headers.
    """

    __slots__ = ("rule", "key", "limiter", "names", "items", "single_item")

    def __init__(self, rule, key, limiter):
        self.rule = rule
        self.key = key
        self.limiter = limiter
        self.names = {policy: policy_name(rule.name, policy) for policy in rule.limits}
        self.items = {policy: sf_string(name) for policy, name in self.names.items()}
        self.single_item = (
            self.items[rule.limits[0]] if len(rule.limits) == 1 else None
        )

    def item_of(self, policy):
        if self.single_item is not None:
            return self.single_item
        item = self.items.get(policy)
        if item is None:
            item = sf_string(policy_name(self.rule.name, policy))
        return item


class _RouteLimits:
    """The bound rules of one route and its RateLimit-Policy value."""

    __slots__ = ("rules", "policies", "route")

    def __init__(self, rules, route):
        self.rules = tuple(rules)
        self.route = route
        named = []
        for bound in self.rules:
            named.extend((bound.names[policy], policy) for policy in bound.rule.limits)
        self.policies = policy_field(named)


def _more_restrictive(decision, other):
    """Return True if decision should be reported in place of other.

    A rejection beats an allowed decision, the longer wait beats the
    shorter, and among allowed decisions the least remaining, then the
    longest time until reset, wins.
    """
    if decision.allowed != other.allowed:
        return not decision.allowed
    if not decision.allowed:
        return decision.retry_after > other.retry_after
    if decision.remaining != other.remaining:
        return decision.remaining < other.remaining
    return decision.reset_after > other.reset_after


def _body_prefix(policy):
    """Return the 429 body up to its retry_after value, as bytes."""
    text = json.dumps(
        {"error": "too many requests", "limit": str(policy), "retry_after": 0},
        separators=(",", ":"),
    )
    return text[: -len("0}")].encode("utf-8")


def _check_rules(rules, request):
    """Count a request against several rules; return (decision, rule).

    The request must pass every rule. Once one rejects it, the rules after
    it are only peeked at, and the rules before it get their count back,
    so a rejected request uses up no budget anywhere.
    """
    chosen = None
    chosen_rule = None
    counted = []
    rejected = False
    for bound in rules:
        key = bound.key(request)
        if rejected:
            decision = bound.limiter.peek(key)
        else:
            decision = bound.limiter.hit(key)
            if decision.allowed:
                counted.append((bound, key, decision))
            else:
                rejected = True
        if chosen is None or _more_restrictive(decision, chosen):
            chosen = decision
            chosen_rule = bound
    if rejected:
        for bound, key, decision in counted:
            bound.limiter.refund(key, now=decision.now)
    return chosen, chosen_rule


class RateLimit:
    """The limits of one Sanic app: rules, table and middleware.

    Made by attach(); see its documentation for the arguments. Available as
    `app.ctx.fastlimit`.
    """

    def __init__(
        self,
        app,
        rules="100/second",
        *,
        key="ip",
        table=None,
        slots=None,
        on_full="allow",
        on_error="allow",
        headers=HEADER_SETS,
        ipv6_prefix=DEFAULT_IPV6_PREFIX,
        allow=(),
        exempt_methods=EXEMPT_METHODS,
    ):
        if on_error not in ON_ERROR:
            raise ValueError(f"invalid on_error {on_error!r}: use 'allow' or 'raise'")
        self.app = app
        self.rules = as_rules(rules, key)
        self.table = table
        self.slots = slots
        self.on_full = on_full
        self.on_error = on_error
        self.writer = HeaderWriter(headers, name_type=istr)
        self.ipv6_prefix = ipv6_prefix
        self.allow = parse_allowlist(allow)
        self.exempt_methods = frozenset(method.upper() for method in exempt_methods)
        # Check the key specs and prefix now, so mistakes fail at attach().
        for rule in self.rules:
            parse_key(rule.key, ipv6_prefix=ipv6_prefix)

        self._limiters = []
        self._body_prefixes = {}
        self._app_limits = None
        self._route_limits = {}
        self._client_address = None
        self._errors = 0
        self._errors_logged = 0
        self._last_error_log = float("-inf")

    # Startup and shutdown

    def route_rules(self):
        """Return {route name: (rules, exempt)} for the app's routes."""
        result = {}
        for route in self.app.router.routes:
            handler = route.handler
            rules = getattr(handler, _RULES_ATTRIBUTE, ())
            is_exempt = bool(getattr(handler, _EXEMPT_ATTRIBUTE, False))
            result[route.name] = (rules, is_exempt)
        return result

    def namespaces(self):
        """Yield (namespace, rule) for every app-wide and route rule."""
        for rule in self.rules:
            yield namespace(rule), rule
        for route_name, (rules, _) in sorted(self.route_rules().items()):
            for rule in rules:
                yield namespace(rule, route_name), rule

    def _open(self, rule, rule_namespace, create=True):
        return Limiter(
            list(rule.limits),
            path=self.table,
            slots=self.slots,
            namespace=rule_namespace,
            on_full=self.on_full,
            create=create,
        )

    def create_table(self):
        """Create the table, or check the existing one, for every rule.

        Raises TableError, TableFull or InvalidLimit if a rule cannot use
        the table. Nothing stays mapped afterwards.
        """
        for rule_namespace, rule in self.namespaces():
            limiter = self._open(rule, rule_namespace)
            limiter.close()
        # Workers only open the table this created: a worker restarted after
        # the file was deleted would otherwise count in a new file of its own.
        self.app.shared_ctx.fastlimit_table_created = Value("b", 1)

    def open(self):
        """Open the table in this worker and bind every route's rules."""
        config = self.app.config
        forwarded = bool(
            config.FORWARDED_SECRET or config.REAL_IP_HEADER or config.PROXIES_COUNT
        )
        self._client_address = ClientAddress(forwarded=forwarded)
        # Without a main process (Sanic's single-process mode) this worker
        # creates the table itself.
        create = getattr(self.app.shared_ctx, "fastlimit_table_created", None) is None
        bound = {}
        for rule_namespace, rule in self.namespaces():
            try:
                limiter = self._open(rule, rule_namespace, create=create)
            except TableError as error:
                logger.error("worker %d cannot open the table: %s", os.getpid(), error)
                raise
            self._limiters.append(limiter)
            key = parse_key(
                rule.key,
                ipv6_prefix=self.ipv6_prefix,
                client_address=self._client_address,
            )
            bound[rule_namespace] = _BoundRule(rule, key, limiter)
        app_rules = [bound[namespace(rule)] for rule in self.rules]
        self._app_limits = _RouteLimits(app_rules, None) if app_rules else None
        for route_name, (rules, is_exempt) in self.route_rules().items():
            if is_exempt:
                self._route_limits[route_name] = None
                continue
            route_rules = [bound[namespace(rule, route_name)] for rule in rules]
            if route_rules:
                self._route_limits[route_name] = _RouteLimits(
                    app_rules + route_rules, route_name
                )
            else:
                self._route_limits[route_name] = self._app_limits
        if self._limiters:
            self.table = self._limiters[0].path

    def close(self):
        """Unmap the table in this worker."""
        limiters, self._limiters = self._limiters, []
        for limiter in limiters:
            limiter.close()
        self._route_limits = {}
        self._app_limits = None

    def stats(self):
        """Return the table statistics (see fastlimit.table_stats), or None."""
        if not self._limiters:
            return None
        return self._limiters[0].stats()

    # Per request

    def _is_allowlisted(self, request):
        address = self._client_address(request)
        if address is None:
            return False
        for network in self.allow:
            if address.version == network.version and address in network:
                return True
        return False

    def _report_error(self, error, limits, request):
        self._errors += 1
        now = time.monotonic()
        if now - self._last_error_log < ERROR_LOG_INTERVAL:
            return
        suppressed = self._errors - self._errors_logged - 1
        self._errors_logged = self._errors
        self._last_error_log = now
        rules = ", ".join(str(bound.rule) for bound in limits.rules)
        target = request.raw_url[:200].decode("ascii", "backslashreplace")
        logger.warning(
            "rate limit check failed on %s %s (route %s, rules %s): %r; "
            "%d similar errors since the last warning",
            request.method,
            target,
            limits.route,
            rules,
            error,
            suppressed,
            exc_info=error,
        )

    # The middleware are plain functions, not coroutines, because Sanic
    # calls them without creating and awaiting a coroutine then.

    def check_request(self, request):
        """Request middleware: count the request and reject it over a limit."""
        if request.method in self.exempt_methods:
            return None
        route = request.route
        if route is None:
            limits = self._app_limits
        else:
            limits = self._route_limits.get(route.name, self._app_limits)
        if limits is None:
            return None
        if self.allow and self._is_allowlisted(request):
            return None

        try:
            if len(limits.rules) == 1:
                chosen_rule = limits.rules[0]
                chosen = chosen_rule.limiter.hit(chosen_rule.key(request))
            else:
                chosen, chosen_rule = _check_rules(limits.rules, request)
        except Exception as error:
            self._report_error(error, limits, request)
            if self.on_error == "raise":
                raise
            return None

        item = chosen_rule.item_of(chosen.policy)
        if chosen.allowed:
            request.ctx.fastlimit = (chosen, item, limits.policies)
            return None
        return self.rejection(chosen, item, limits.policies)

    def rejection(self, decision, item, policies):
        """Return the 429 response for a rejected decision.

        The JSON body is {"error": "too many requests", "limit": "10/minute",
        "retry_after": 3}, with the reported policy and the Retry-After value.
        """
        prefix = self._body_prefixes.get(decision.policy)
        if prefix is None:
            prefix = _body_prefix(decision.policy)
            self._body_prefixes[decision.policy] = prefix
        body = b"%s%d}" % (prefix, retry_after_seconds(decision))
        headers = self.writer.headers(decision, item, policies, rejected=True)
        return HTTPResponse(
            body, status=429, headers=headers, content_type="application/json"
        )

    def add_headers(self, request, response):
        """Response middleware: add the headers of an allowed request."""
        state = getattr(request.ctx, "fastlimit", None)
        if state is None:
            return
        decision, item, policies = state
        # update() replaces fields of the same name that the handler set.
        response.headers.update(self.writer.headers(decision, item, policies))


def attach(app, rules="100/second", **options):
    """Attach rate limiting to a Sanic app and return its RateLimit.

    rules: a str of limits such as "10/second; 1000/hour" for one rule with
    key spec `key`, a Rule, a (key spec, limits) pair, or a list of these;
    None or [] for route rules (@limit) only. Options, all keyword-only:

    key: the key spec of a rule given as a str (default "ip").
    table: the table file (default fastlimit.default_path()); slots: its
    size when created. on_full: what Limiter does when the table is full.
    on_error: "allow" (log a warning and let the request through) or
    "raise" (log, then let Sanic return 500).
    headers: the header sets to send, from fastlimit.headers.HEADER_SETS.
    ipv6_prefix: the prefix length that groups IPv6 clients (default 64).
    allow: CIDR ranges, as a list or a comma-separated str, that are never
    limited. exempt_methods: methods not counted (default OPTIONS).

    Raises ValueError or InvalidLimit for bad rules or options, and
    RuntimeError if the app already has one.
    """
    if getattr(app.ctx, "fastlimit", None) is not None:
        raise RuntimeError(f"rate limiting is already attached to app {app.name!r}")
    extension = RateLimit(app, rules, **options)
    app.ctx.fastlimit = extension

    async def create_table(app):
        extension.create_table()

    async def open_table(app):
        extension.open()

    async def close_table(app):
        extension.close()

    app.main_process_start(create_table)
    app.before_server_start(open_table)
    app.after_server_stop(close_table)
    app.on_request(extension.check_request, priority=MIDDLEWARE_PRIORITY)
    app.on_response(extension.add_headers, priority=MIDDLEWARE_PRIORITY)
    return extension
