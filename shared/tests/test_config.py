"""Config: TOML file, environment on top, and one clear line per mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from minerwatch.shared.config import (
    BUILTIN_RULES,
    ConfigError,
    Endpoint,
    endpoint,
    load_config,
    store_client_id,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "minerwatch.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_design() -> None:
    config = load_config(environ={})
    assert config.mqtt.url == "mqtt://127.0.0.1:1883"
    assert config.mqtt.base_topic == "minerwatch"
    assert config.database.url == "sqlite:///data/minerwatch.db"
    assert config.api.listen == "127.0.0.1:8000"
    assert config.collector.miners == []
    assert config.collector.poll_interval_s == 10
    assert config.collector.offline_after == 3
    assert config.alerts.rules == []  # the built-in rules cover what overheat did
    assert config.alerts.temp_high.enabled and config.alerts.offline.for_s == 60
    assert config.store.client_id is None and store_client_id(config) == "minerwatch-store"


def test_file_then_environment(tmp_path: Path) -> None:
    path = write(tmp_path, """
[mqtt]
url = "mqtt://user:secret@127.0.0.1:1884"
base_topic = "farm"

[collector]
poll_interval_s = 30

[[collector.miners]]
url = "axeos://10.0.0.5"
name = "garage"
""")
    config = load_config(path, environ={})
    assert config.mqtt.base_topic == "farm"
    assert config.collector.poll_interval_s == 30
    assert config.collector.miners[0].name == "garage"

    config = load_config(path, environ={
        "MINERWATCH_BASE_TOPIC": "shed",
        "MINERWATCH_POLL_INTERVAL_S": "5",
        "MINERWATCH_MINERS": "axeos://127.0.0.1:8081, cgminer://127.0.0.1:4029?name=s19",
    })
    assert config.mqtt.base_topic == "shed"
    assert config.collector.poll_interval_s == 5.0
    assert [m.url for m in config.collector.miners] == [
        "axeos://127.0.0.1:8081", "cgminer://127.0.0.1:4029?name=s19",
    ]


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nlisten = "127.0.0.1:9000"\n')
    assert load_config(environ={"MINERWATCH_CONFIG": str(path)}).api.listen == "127.0.0.1:9000"


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("", {"MINERWATCH_POLL_INTERVAL_S": "soon"},
         "MINERWATCH_POLL_INTERVAL_S='soon': Expected `float`, got `str`"),
        ("", {"MINERWATCH_POLL_INTERVAL_S": "0"}, "MINERWATCH_POLL_INTERVAL_S='0'"),
        ("", {"MINERWATCH_MQTT_URL": "http://broker"}, "must start with mqtt:// or mqtts://"),
        ("", {"MINERWATCH_MINERS": "ftp://10.0.0.5"}, "must start with one of"),
        ("", {"MINERWATCH_API_LISTEN": "localhost"}, "is not host:port"),
        ("", {"MINERWATCH_BASE_TOPIC": "a/b"}, "MINERWATCH_BASE_TOPIC"),
        ("[collector]\npoll_interval_s = 'x'\n", {}, "collector.poll_interval_s"),
        ("[collector]\nbogus = 1\n", {}, "collector: Object contains unknown field `bogus`"),
        ("[[collector.miners]]\nurl = 'axeos://h'\nname = 'Bad Name'\n", {},
         "collector.miners[0]: name 'Bad Name'"),
        ("[[alerts.rules]]\nname = 'hot'\nfield = 'temp_c'\nop = '=='\nthreshold = 1\n", {},
         "alerts.rules[0].op"),
        ("[mqtt\n", {}, "is not valid TOML"),
    ],
)
def test_errors_are_one_line_naming_the_key(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ=environ)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_endpoint_defaults_ports() -> None:
    assert endpoint("axeos://10.0.0.5") == Endpoint("axeos", "10.0.0.5", 80, None)
    assert endpoint("cgminer://10.0.0.6") == Endpoint("cgminer", "10.0.0.6", 4028, None)
    assert endpoint("cgminer://10.0.0.6:4029?name=s19").name == "s19"


def test_a_service_with_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    code = (
        "from minerwatch.shared.service import run_service\n"
        "async def main(config): raise AssertionError('must not run')\n"
        "run_service('demo', main)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env={"MINERWATCH_POLL_INTERVAL_S": "often", "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "minerwatch-demo: config: MINERWATCH_POLL_INTERVAL_S='often': Expected `float`, got `str`"
    ]


@pytest.mark.parametrize("path", ["minerwatch.example.toml", "deploy/minerwatch.toml"])
def test_shipped_config_files_load(path: str) -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_config(root / path, environ={})
    # Every built-in rule is on in what we ship; the example also shows the other tables.
    assert all(config.alerts.builtin(name).enabled for name in BUILTIN_RULES)
    if path == "minerwatch.example.toml":
        assert config.alerts.rules and config.alerts.overrides
        assert config.collector.miners[0].label == "Garage Bitaxe"


def test_database_url_errors_never_show_the_password() -> None:
    from minerwatch.shared.db import async_url  # the db extra is not always installed

    with pytest.raises(ConfigError) as err:
        async_url("mysql://user:hunter2@db.example/minerwatch")
    assert "hunter2" not in str(err.value)
    assert "only sqlite:// and postgresql://" in str(err.value)
    with pytest.raises(ConfigError, match="not a database URL"):
        async_url("::: not a url :::")


def test_discovery_is_off_by_default() -> None:
    discovery = load_config(environ={}).collector.discovery
    assert discovery.cidrs == [] and discovery.mdns is False
    assert discovery.ports == [80, 4028]


def test_discovery_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, """
[collector.discovery]
cidrs = ["192.168.1.0/24", "10.1.2.3/16"]
rescan_interval_s = 300
concurrency = 32
timeout_s = 0.5
budget_s = 60
mdns = true
""")
    discovery = load_config(path, environ={}).collector.discovery
    assert discovery.cidrs == ["192.168.1.0/24", "10.1.2.3/16"]
    assert (discovery.rescan_interval_s, discovery.concurrency, discovery.timeout_s,
            discovery.budget_s, discovery.mdns) == (300, 32, 0.5, 60, True)

    environ = {"MINERWATCH_DISCOVER_CIDRS": " 127.0.0.0/28, ,127.0.1.0/24 "}
    discovery = load_config(path, environ=environ).collector.discovery
    assert discovery.cidrs == ["127.0.0.0/28", "127.0.1.0/24"]
    assert discovery.mdns is True  # the rest of the section stays as the file says


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("", {"MINERWATCH_DISCOVER_CIDRS": "10.0.0.0/8"},
         "MINERWATCH_DISCOVER_CIDRS='10.0.0.0/8': '10.0.0.0/8' is larger than a /16"),
        ("", {"MINERWATCH_DISCOVER_CIDRS": "192.168.1.0/24,lan"},
         "'lan' is not an address range"),
        ("[collector.discovery]\ncidrs = ['172.16.0.0/12']\n", {},
         "collector.discovery: '172.16.0.0/12' is larger than a /16 (1048576 addresses)"),
        ("[collector.discovery]\ncidrs = ['2001:db8::/64']\n", {}, "is larger than a /16"),
        ("[collector.discovery]\nports = []\n", {}, "collector.discovery.ports"),
        ("[collector.discovery]\nports = [0]\n", {}, "collector.discovery.ports[0]"),
        ("[collector.discovery]\nscan_everything = true\n", {}, "unknown field"),
    ],
)
def test_discovery_errors_are_one_line(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ=environ)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_slash_16_is_the_largest_range_allowed() -> None:
    config = load_config(environ={"MINERWATCH_DISCOVER_CIDRS": "10.7.0.0/16,10.8.0.9"})
    assert config.collector.discovery.cidrs == ["10.7.0.0/16", "10.8.0.9"]


def test_store_session_from_environment() -> None:
    config = load_config(environ={"MINERWATCH_STORE_CLIENT_ID": "store-2",
                                  "MINERWATCH_STORE_GROUP": "stores"})
    assert (config.store.client_id, config.store.group) == ("store-2", "stores")
    with pytest.raises(ConfigError, match="MINERWATCH_STORE_CLIENT_ID"):
        load_config(environ={"MINERWATCH_STORE_CLIENT_ID": "has space"})


def test_a_malformed_broker_url_never_shows_its_password() -> None:
    from minerwatch.shared.config import ConfigError, load_config, redact

    for url in ("mqtt://collector:s3cret@host:99999", "mqt://a:s3cret@h", "collector:s3cret@",
                "mqtt://u:s3c@ret@host:x"):
        try:
            load_config(environ={"MINERWATCH_MQTT_URL": url, "MINERWATCH_CONFIG": "/dev/null"})
        except ConfigError as exc:
            assert "s3c" not in str(exc) and "***" in str(exc)
        else:
            raise AssertionError(f"{url} was accepted")
    assert redact("mqtt://host:1883") == "mqtt://host:1883"


def test_store_client_id_follows_the_base_topic(tmp_path: Path) -> None:
    def client_id(base: str) -> str:
        return store_client_id(load_config(environ={"MINERWATCH_BASE_TOPIC": base}))

    assert client_id("site2") == "site2-store"
    # Characters a client id cannot hold are replaced, and a hash keeps bases apart.
    ids = {client_id(base) for base in ("site 2", "site-2", "site é", "site ü")}
    assert len(ids) == 4
    assert client_id("site 2").endswith("-store") and " " not in client_id("site 2")
    path = write(tmp_path, '[store]\nclient_id = "mine"\n')
    assert store_client_id(load_config(path, environ={})) == "mine"


def test_labels_are_free_text_names_stay_slugs(tmp_path: Path) -> None:
    path = write(tmp_path, '[[collector.miners]]\nurl = "axeos://10.0.0.5"\n'
                           'name = "garage"\nlabel = "Garage Bitaxe ☀"\n')
    assert load_config(path, environ={}).collector.miners[0].label == "Garage Bitaxe ☀"
    path = write(tmp_path, '[[collector.miners]]\nurl = "axeos://10.0.0.5"\nlabel = "a\\nb"\n')
    with pytest.raises(ConfigError, match=r"collector.miners\[0\].label"):
        load_config(path, environ={})


def test_alert_tables_and_overrides_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, """
[alerts.hashrate_low]
pct = 70
[[alerts.overrides]]
match = { model = "S19 Pro" }
temp_high = { threshold = 85 }
[alerts]
notify = ["json://127.0.0.1:9/", { url = "json://127.0.0.1:9/x", min_severity = "critical" }]
""")
    alerts = load_config(path, environ={}).alerts
    assert alerts.hashrate_low.pct == 70 and alerts.hashrate_low.for_s == 600
    assert alerts.overrides[0].changes() == {"temp_high": {"threshold": 85}}
    assert [t.min_severity for t in alerts.targets()] == ["info", "critical"]
    for bad, where in [
        ('temp_high = { treshold = 85 }', "temp_high: Object contains unknown field"),
        ('temp_high = { threshold = "hot" }', "temp_high.threshold: Expected"),
        ('overheat = { threshold = 1 }', "unknown field `overheat`"),
    ]:
        path = write(tmp_path, f'[[alerts.overrides]]\nmatch = {{ make = "Bitaxe" }}\n{bad}\n')
        with pytest.raises(ConfigError, match=r"alerts\.overrides\[0\]") as caught:
            load_config(path, environ={})
        assert where in str(caught.value) and "\n" not in str(caught.value)
    path = write(tmp_path, '[[alerts.overrides]]\nmatch = {}\n')
    with pytest.raises(ConfigError, match="at least one of"):
        load_config(path, environ={})
    path = write(tmp_path, '[api]\npublic_url = "minerwatch.lan"\n')
    with pytest.raises(ConfigError, match="public_url"):
        load_config(path, environ={})
