"""The whitelist model (validate_config, match) and its file: hot reload that
keeps the previous whitelist when the file breaks, and locked edits."""

from __future__ import annotations

import json
import os

import pytest

from netsentinel.whitelist import (DEFAULT_CONFIG, ConfigError, Whitelist, WhitelistFile,
                                   normalize_entry, validate_config)


# ------------------------------------------------------------- validate_config

def test_empty_config_gets_every_default():
    assert validate_config({}) == DEFAULT_CONFIG


def test_good_config_is_normalised():
    cfg = validate_config({
        "trusted_ips": [" 192.0.2.10 ", "10.20.0.0/16", "::ffff:198.51.100.1", "2001:DB8::/32",
                        "192.0.2.11/32"],
        "trusted_processes": ["chronyd", " /usr/sbin/sshd "],
        "trusted_ports": [53, "123"],
        "whitelisted_connections": "mark",
        "protect_ssh_ports": [22, "2222"],
        "min_ban_prefix": {"ipv4": 16},
        "dashboard_theme": "dark",
    })
    assert cfg["trusted_ips"] == ["192.0.2.10", "10.20.0.0/16", "198.51.100.1", "2001:db8::/32",
                                  "192.0.2.11"]
    assert cfg["trusted_processes"] == ["chronyd", "/usr/sbin/sshd"]
    assert cfg["trusted_ports"] == [53, 123]
    assert cfg["protect_ssh_ports"] == [22, 2222]
    assert cfg["min_ban_prefix"] == {"ipv4": 16, "ipv6": 32}
    assert cfg["whitelisted_connections"] == "mark"
    assert cfg["dashboard_theme"] == "dark"  # other tools' keys survive
    assert validate_config(cfg) == cfg  # idempotent


@pytest.mark.parametrize("raw, words", [
    ([], "must hold a JSON object"),
    ("trusted_ips", "must hold a JSON object"),
    ({"trusted_ips": "1.2.3.4"}, "trusted_ips must be a list"),
    ({"trusted_processes": {"a": 1}}, "trusted_processes must be a list"),
    ({"trusted_ports": 53}, "trusted_ports must be a list"),
    ({"trusted_ips": ["1.2.3.400"]}, "is not a valid IP address or CIDR"),
    ({"trusted_ips": ["10.1.2.3/8"]}, "did you mean 10.0.0.0/8?"),
    ({"trusted_ips": ["fe80::1%eth0"]}, "scoped IPv6"),
    # Trusting everything would hide every connection and block every ban.
    ({"trusted_ips": ["0.0.0.0/0"]}, "0.0.0.0/0 is too broad to trust: whitelist entries need a "
                                     "prefix of /8 or longer"),
    ({"trusted_ips": ["0.0.0.0/1"]}, "too broad to trust"),
    ({"trusted_ips": ["12.0.0.0/7"]}, "/8 or longer"),
    ({"trusted_ips": ["::/0"]}, "::/0 is too broad to trust: whitelist entries need a prefix of "
                                "/32 or longer"),
    ({"trusted_ips": ["2001::/31"]}, "/32 or longer"),
    ({"trusted_processes": [""]}, "must be a name or an absolute exe path"),
    ({"trusted_processes": [7]}, "must be a name or an absolute exe path"),
    ({"trusted_processes": ["a-very-long-process"]}, "longer than 15 characters"),
    ({"trusted_ports": [0]}, "outside 1-65535"),
    ({"trusted_ports": [65536]}, "outside 1-65535"),
    ({"trusted_ports": ["http"]}, "is not a number"),
    ({"trusted_ports": [True]}, "is not a number"),
    ({"trusted_ports": [53.5]}, "is not a number"),
    ({"whitelisted_connections": "show"}, 'must be "hide" or "mark"'),
    ({"protect_ssh_ports": 22}, "protect_ssh_ports must be a list"),
    ({"protect_ssh_ports": [99999]}, "outside 1-65535"),
    ({"min_ban_prefix": 8}, "min_ban_prefix must be an object"),
    ({"min_ban_prefix": {"ipv4": 33}}, "min_ban_prefix.ipv4 must be an integer 0-32"),
    ({"min_ban_prefix": {"ipv6": "32"}}, "min_ban_prefix.ipv6 must be an integer 0-128"),
    ({"min_ban_prefix": {"ipv6": True}}, "min_ban_prefix.ipv6 must be an integer 0-128"),
])
def test_bad_configs_are_refused_in_one_line(raw, words):
    with pytest.raises(ConfigError) as exc:
        validate_config(raw)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_long_process_path_is_fine():
    assert normalize_entry("process", "/usr/lib/a-very-long-daemon-name") == \
        "/usr/lib/a-very-long-daemon-name"
    with pytest.raises(ConfigError, match="unknown whitelist kind"):
        normalize_entry("host", "x")


# ------------------------------------------------------------------------ match

WL = Whitelist({"trusted_ips": ["192.0.2.10", "10.20.0.0/16", "2001:db8::/32"],
                "trusted_processes": ["chronyd", "/usr/sbin/sshd"], "trusted_ports": [53]})


@pytest.mark.parametrize("kwargs, reason", [
    ({"daddr": "192.0.2.10"}, "ip 192.0.2.10"),
    ({"daddr": "10.20.5.6", "dport": 443}, "ip 10.20.0.0/16"),
    ({"daddr": "::ffff:10.20.0.1"}, "ip 10.20.0.0/16"),
    ({"daddr": "2001:db8:1:2::3"}, "ip 2001:db8::/32"),
    ({"daddr": "203.0.113.1", "dport": 53}, "port 53"),
    ({"daddr": "203.0.113.1", "dport": 443, "comm": "chronyd"}, "process chronyd"),
    ({"daddr": "203.0.113.1", "dport": 443, "comm": "sshd", "exe": "/usr/sbin/sshd"},
     "process /usr/sbin/sshd"),
])
def test_match_reasons(kwargs, reason):
    assert WL.match(**kwargs) == reason


@pytest.mark.parametrize("kwargs", [
    {"daddr": "192.0.2.11", "dport": 80, "comm": "curl", "exe": "/usr/bin/curl"},
    {"daddr": "10.21.0.1"},
    {"daddr": "2001:db9::1"},
    {"daddr": "not-an-address", "dport": 80},
    {"dport": 54},
    {"comm": "sshd", "exe": "/usr/local/sbin/sshd"},  # a name is not a path and vice versa
    {"comm": "/usr/sbin/sshd"},
    {},
])
def test_match_misses(kwargs):
    assert WL.match(**kwargs) is None


def test_trusted_network_for_ban_targets():
    from netsentinel.addresses import parse_target
    assert str(WL.trusted_network_for(parse_target("10.0.0.0/8"))) == "10.20.0.0/16"
    assert WL.trusted_network_for(parse_target("10.30.0.0/16")) is None


# ------------------------------------------------------------------- hot reload

def replace_file(path, text: str) -> None:
    """Like an editor that saves to a temp file and renames it."""
    tmp = path.with_name(path.name + ".edit")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def wfile(tmp_path):
    warnings: list[str] = []
    path = tmp_path / "conf" / "filter_config.json"
    wf = WhitelistFile(path, warn=warnings.append)
    wf.warnings = warnings
    return wf


def test_missing_file_at_first_start_means_defaults_with_a_warning(wfile):
    wl = wfile.current()
    assert wl.config == DEFAULT_CONFIG and wfile.last_error is None
    assert wfile.warnings == [f"{wfile.path} not found; starting with the default whitelist "
                              "(nothing trusted but the protected SSH ports)"]
    wfile.current()
    assert len(wfile.warnings) == 1  # said once


def test_narrowest_accepted_entries():
    assert normalize_entry("ip", "10.0.0.0/8") == "10.0.0.0/8"
    assert normalize_entry("ip", "2001:db8::/32") == "2001:db8::/32"


def test_hot_reload_keeps_previous_whitelist_while_the_file_is_broken(wfile):
    path = wfile.path
    replace_file(path, json.dumps({"trusted_ips": ["192.0.2.10"]}))
    first = wfile.current()
    assert first.match(daddr="192.0.2.10") == "ip 192.0.2.10"
    assert wfile.current() is first  # unchanged file: not re-read

    replace_file(path, json.dumps({"trusted_ips": ["192.0.2.10", "198.51.100.0/24"]}))
    second = wfile.current()
    assert second is not first and second.match(daddr="198.51.100.9") == "ip 198.51.100.0/24"

    replace_file(path, '{"trusted_ips": ["192.0.2.10", ')  # broken JSON
    assert wfile.current() is second
    assert "invalid JSON" in wfile.last_error
    assert path.read_text() == '{"trusted_ips": ["192.0.2.10", '  # never set aside or rewritten

    path.write_text(json.dumps({"trusted_ips": ["999.1.1.1"]}))  # in place, valid JSON, bad value
    assert wfile.current() is second
    assert "999.1.1.1" in wfile.last_error
    assert any("keeping the previous whitelist" in w for w in wfile.warnings)

    replace_file(path, json.dumps({"trusted_ports": [8443]}))
    fixed = wfile.current()
    assert fixed.match(dport=8443) == "port 8443" and fixed.match(daddr="192.0.2.10") is None
    assert wfile.last_error is None
    assert "valid again, reloaded" in wfile.warnings[-1]


def test_deleting_the_file_is_an_error_and_keeps_the_previous_whitelist(wfile):
    replace_file(wfile.path, json.dumps({"trusted_ports": [8443], "trusted_ips": ["10.9.0.0/16"]}))
    before = wfile.current()
    assert before.ports == {8443}
    wfile.path.unlink()
    assert wfile.current() is before  # still trusted, still unbannable
    assert wfile.last_error == f"{wfile.path} is missing"
    assert wfile.warnings[-1] == (f"{wfile.path} is missing; keeping the previous whitelist "
                                  "(restore the file, or save an empty one to trust nothing)")
    replace_file(wfile.path, json.dumps({}))
    assert wfile.current().ports == set() and wfile.last_error is None
    assert "valid again" in wfile.warnings[-1]


# ------------------------------------------------------------------------- edit

def test_edit_add_remove_is_idempotent(wfile):
    assert wfile.edit("ip", "10.20.0.0/16") == (True, "10.20.0.0/16")
    assert wfile.edit("ip", " 10.20.0.0/16 ") == (False, "10.20.0.0/16")
    assert wfile.edit("port", "53") == (True, 53)
    assert wfile.edit("port", 53) == (False, 53)
    assert wfile.edit("process", "chronyd") == (True, "chronyd")
    on_disk = json.loads(wfile.path.read_text())
    assert on_disk["trusted_ips"] == ["10.20.0.0/16"] and on_disk["trusted_ports"] == [53]
    assert validate_config(on_disk) == on_disk  # what is written is complete and valid
    assert wfile.edit("ip", "10.20.0.0/16", remove=True) == (True, "10.20.0.0/16")
    before = wfile.path.stat()
    assert wfile.edit("ip", "10.20.0.0/16", remove=True) == (False, "10.20.0.0/16")
    after = wfile.path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # no rewrite
    assert wfile.current().config["trusted_ips"] == []


def test_edit_refuses_bad_values_and_broken_files_without_writing(wfile):
    replace_file(wfile.path, json.dumps({"trusted_ips": ["192.0.2.10"], "extra": {"k": 1}}))
    original = wfile.path.read_text()
    with pytest.raises(ConfigError, match="did you mean"):
        wfile.edit("ip", "10.1.2.3/8")
    with pytest.raises(ConfigError, match="unknown whitelist kind"):
        wfile.edit("cidr", "10.0.0.0/8")
    assert wfile.path.read_text() == original
    wfile.edit("port", 22)
    assert json.loads(wfile.path.read_text())["extra"] == {"k": 1}

    replace_file(wfile.path, "{broken")
    from netsentinel.store import StoreError
    with pytest.raises(StoreError):
        wfile.edit("port", 80)
    assert wfile.path.read_text() == "{broken"


def test_save_validates_whole_config(wfile):
    saved = wfile.save({"trusted_ips": ["::ffff:192.0.2.1"]})
    assert saved["trusted_ips"] == ["192.0.2.1"]
    with pytest.raises(ConfigError):
        wfile.save({"trusted_ports": ["x"]})
    assert json.loads(wfile.path.read_text()) == saved


def test_shipped_filter_config_is_valid_and_empty():
    from netsentinel import paths
    raw = json.loads((paths.PROJECT_ROOT / "filter_config.json").read_text())
    assert validate_config(raw) == raw == DEFAULT_CONFIG
