"""Settings precedence and one-line errors."""

import pytest

from node.core import config
from node.core.errors import ConfigError


def test_defaults(tmp_path):
    c = config.load(tmp_path, env={})
    assert c.admin_port == 8420 and c.admin_host == "127.0.0.1" and c.data_dir == tmp_path


def test_precedence_file_env_flags(tmp_path):
    (tmp_path / "pasar.toml").write_text("admin_port = 9000\npage_size = 10\nlog_level = 'debug'\n")
    env = {"PASAR_ADMIN_PORT": "9100", "PASAR_DATA_DIR": "/ignored", "HOME": "/x"}
    c = config.load(tmp_path, env=env, flags={"admin_port": 9200, "log_level": None})
    assert (c.admin_port, c.page_size, c.log_level) == (9200, 10, "debug")
    assert config.load(tmp_path, env=env).admin_port == 9100


@pytest.mark.parametrize(
    "toml, message",
    [
        ("admin_prot = 1", "unknown setting 'admin_prot'"),
        ("admin_port = 'x'", "must be int"),
        ("admin_port = 70000", "port number"),
        ("admin_host = '0.0.0.0'", "loopback"),
        ("page_size = true", "must be int"),
        ("page_size = [", "not valid TOML"),
        ("log_level = 'loud'", "must be one of"),
        ("catalog_ttl = 60", "at least 3600"),
    ],
)
def test_bad_file_values_fail_with_one_line(tmp_path, toml, message):
    (tmp_path / "pasar.toml").write_text(toml)
    with pytest.raises(ConfigError) as exc:
        config.load(tmp_path, env={})
    assert message in exc.value.message and "\n" not in exc.value.message


def test_bad_env_values_fail(tmp_path):
    with pytest.raises(ConfigError, match="PASAR_ADMIN_PORTT"):
        config.load(tmp_path, env={"PASAR_ADMIN_PORTT": "1"})
    with pytest.raises(ConfigError, match="must be int"):
        config.load(tmp_path, env={"PASAR_PAGE_SIZE": "1.5"})


def test_data_dir_resolution(tmp_path, monkeypatch):
    assert config.resolve_data_dir(str(tmp_path), {}) == tmp_path
    assert config.resolve_data_dir(None, {"PASAR_DATA_DIR": str(tmp_path)}) == tmp_path
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert config.resolve_data_dir(None, {}) == tmp_path / "pasar"


def test_tor_settings_from_a_table_or_dotted_keys(tmp_path):
    (tmp_path / "pasar.toml").write_text('[tor]\ncontrol = "127.0.0.1:9051"\nsocks = "127.0.0.1:9050"\n')
    c = config.load(tmp_path, env={})
    assert (c.tor_control, c.tor_socks) == ("127.0.0.1:9051", "127.0.0.1:9050")
    (tmp_path / "pasar.toml").write_text('tor.control = "/run/tor/control"\n')
    assert config.load(tmp_path, env={}).tor_control == "/run/tor/control"
    assert config.load(tmp_path, env={"PASAR_TOR_CONTROL": "127.0.0.2:9051"}).tor_control == "127.0.0.2:9051"


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"tor_control": "192.0.2.5:9051"}, "loopback HOST:PORT"),
        ({"tor_control": "9051"}, "loopback HOST:PORT"),
        ({"tor_control": "127.0.0.1:99999"}, "loopback HOST:PORT"),
        ({"tor_socks": "198.51.100.7:9050"}, "loopback HOST:PORT"),
        ({"tor_socks": "/run/tor/socks"}, "loopback HOST:PORT"),
        ({"tor_control": "[::1]:9051"}, "loopback HOST:PORT"),
        ({"tor_socks": "::1:9050"}, "loopback HOST:PORT"),
    ],
)
def test_tor_endpoints_must_be_local(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path, env={}, flags=flags)


def test_unknown_key_in_a_table_is_named(tmp_path):
    (tmp_path / "pasar.toml").write_text('[tor]\ncontrl = "127.0.0.1:9051"\n')
    with pytest.raises(ConfigError, match="unknown setting 'tor_contrl'"):
        config.load(tmp_path, env={})


def test_the_settings_table_is_the_config_class(tmp_path):
    """Defaults, help and checks are declared once, on Config's fields; the table is read from them."""
    from dataclasses import fields

    declared = [f for f in fields(config.Config) if f.name != "data_dir"]
    assert [s.name for s in config.SETTINGS] == [f.name for f in declared]
    plain = config.Config(data_dir=tmp_path)
    for setting in config.SETTINGS:
        assert getattr(plain, setting.name) == setting.default and setting.help
        assert isinstance(setting.default, setting.type)
    assert config.SECRET_SETTINGS == {"tor_password", "bitcoin_rpc_password", "directory_dsn"}
    with pytest.raises(ConfigError, match="admin_port"):
        config.load(tmp_path, env={}, flags={"admin_port": 70000})


ONION = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"


def test_list_settings_from_a_toml_array_the_environment_and_a_flag(tmp_path):
    (tmp_path / "pasar.toml").write_text(f'seed_peers = ["{ONION}.onion"]\n')
    assert config.load(tmp_path, env={}).seed_peers == (f"{ONION}.onion",)
    env = {"PASAR_SEED_PEERS": f"{ONION}, {ONION}.onion"}
    assert config.load(tmp_path, env=env).seed_peers == (ONION, f"{ONION}.onion")
    flags = {"blocklist_subscriptions": f"{ONION} "}
    assert config.load(tmp_path, env={}, flags=flags).blocklist_subscriptions == (ONION,)
    assert config.load(tmp_path, env={"PASAR_SEED_PEERS": ""}).seed_peers == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('seed_peers = ["not-an-onion"]', "must list v3 onion addresses; not one: 'not-an-onion'"),
        ("seed_peers = [1, 2]", "must be a list of strings"),
        ("gossip_interval = 4", "must be at least 5"),
        ('gossip = "sometimes"', "must be bool"),
    ],
)
def test_bad_discovery_settings_fail_with_one_line(tmp_path, toml, message):
    (tmp_path / "pasar.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=message):
        config.load(tmp_path, env={})
