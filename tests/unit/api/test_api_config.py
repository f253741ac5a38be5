from __future__ import annotations

import pytest

from saga.api import ApiConfig, Principal, Role, check_bind, parse_tokens
from saga.errors import ConfigError


def test_parse_tokens_reads_token_role_name_triples() -> None:
    tokens = parse_tokens(" t1:viewer:vera , t2:operator:otto,")
    assert tokens == {
        "t1": Principal(name="vera", role=Role.VIEWER),
        "t2": Principal(name="otto", role=Role.OPERATOR),
    }
    assert parse_tokens("") == {}


def test_a_name_may_contain_colons() -> None:
    assert parse_tokens("t:viewer:svc:reporting")["t"].name == "svc:reporting"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("t1:viewer", "token:role:name"),
        ("t1::vera", "token:role:name"),
        ("t1:admin:vera", "unknown role 'admin'"),
        ("t1:viewer:a,t1:operator:b", "used twice"),
    ],
)
def test_parse_tokens_names_what_is_wrong(spec: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_tokens(spec)


def test_roles() -> None:
    assert Role.OPERATOR.allows(Role.OPERATOR)
    assert Role.OPERATOR.allows(Role.VIEWER)
    assert Role.VIEWER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_without_tokens_loopback_is_fine(host: str) -> None:
    check_bind(host, ApiConfig())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "api.example"])
def test_without_tokens_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(ConfigError, match="SAGA_API_TOKENS"):
        check_bind(host, ApiConfig())
    check_bind(host, ApiConfig(tokens={"t": Principal(name="n", role=Role.VIEWER)}))


def test_config_is_validated_and_frozen() -> None:
    with pytest.raises(ConfigError):
        ApiConfig(tokens={"has space": Principal(name="n", role=Role.VIEWER)})
    with pytest.raises(ConfigError):
        ApiConfig(readiness_timeout_s=0)
    config = ApiConfig(tokens={"t": Principal(name="n", role=Role.VIEWER)})
    with pytest.raises(TypeError):
        config.tokens["u"] = Principal(name="m", role=Role.OPERATOR)  # type: ignore[index]
