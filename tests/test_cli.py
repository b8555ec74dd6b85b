"""``ciris-av``: keys, node --check, overrides and delegation, called in-process through ``main``."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from ciris_av_plugin import cli
from ciris_av_plugin.config import ConfigError


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_create_show_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "d")
    code, out, _ = run(capsys, "keys", "create", "alice", "--data-dir", data)
    assert code == 0 and out.startswith("alice  <")
    created_hash = out.split("<")[1].split(">")[0]
    code, out, _ = run(capsys, "keys", "show", "alice", "--json", "--data-dir", data)
    (row,) = json.loads(out)
    assert code == 0 and row["name"] == "alice" and row["hash"] == created_hash and len(row["public_key"]) == 128
    run(capsys, "keys", "create", "bob", "--data-dir", data)
    code, out, _ = run(capsys, "keys", "show", "--data-dir", data)
    assert [line.split()[0] for line in out.splitlines()] == ["alice", "bob"]


def test_keys_errors_are_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "d")
    run(capsys, "keys", "create", "alice", "--data-dir", data)
    code, out, err = run(capsys, "keys", "create", "alice", "--data-dir", data)
    assert code == 1 and out == "" and err.startswith("ciris-av: ") and "already exists" in err
    (tmp_path / "d" / "identities" / "alice").chmod(0o644)
    code, _, err = run(capsys, "keys", "show", "alice", "--data-dir", data)
    assert code == 1 and "refusing to use it" in err


def test_keys_use_node_data_dir_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'node.data_dir = "{tmp_path / "from-config"}"\n')
    assert run(capsys, "keys", "create", "n1", "-c", str(config))[0] == 0
    assert (tmp_path / "from-config" / "identities" / "n1").is_file()


def test_node_check_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[realtime_av]\nmax_subscribers_per_stream = 0\n")
    code, _, err = run(capsys, "node", "-c", str(bad), "--check")
    assert code == 1
    assert "realtime_av.max_subscribers_per_stream: 0 is out of range, expected 1 to 4096" in err
    code, _, err = run(capsys, "node", "-c", str(tmp_path / "missing.toml"), "--check")
    assert code == 1 and "configuration file not found" in err


def test_node_refuses_a_bad_config_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ciris_av_plugin import host

    monkeypatch.setattr(host, "start_rns", lambda config: pytest.fail("RNS started despite a bad config"))
    bad = tmp_path / "bad.toml"
    bad.write_text(f'node.data_dir = "{tmp_path / "data"}"\nnet.listen_addr = "127.0.0.1:99999"\n')
    code, _, err = run(capsys, "node", "-c", str(bad))
    assert code == 1
    assert "net.listen_addr: port 99999 in '127.0.0.1:99999' is out of range, expected 1 to 65535" in err
    assert not (tmp_path / "data").exists(), "no identity was created for a node that cannot start"


def test_node_defaults_enable_the_plugin_but_the_file_and_set_win(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "node", "--check")
    assert code == 0 and "realtime_av enabled" in out
    off = tmp_path / "off.toml"
    off.write_text("realtime_av.enabled = false\n")
    assert "realtime_av disabled" in run(capsys, "node", "-c", str(off), "--check")[1]
    code, out, _ = run(
        capsys, "node", "-c", str(off), "--check", "--set", "realtime_av.enabled=true",
        "--set", 'net.listen_addr="127.0.0.1:5001"', "--set", 'realtime_av.roles=["relay","watch"]',
    )
    assert code == 0 and "realtime_av enabled roles=relay,watch listen=127.0.0.1:5001" in out


def test_set_values_are_toml_with_string_fallback() -> None:
    assert cli._parse_override("a.b=64") == ("a.b", 64)
    assert cli._parse_override("a.b=true") == ("a.b", True)
    assert cli._parse_override("node.data_dir=/tmp/x") == ("node.data_dir", "/tmp/x")
    with pytest.raises(ConfigError, match="expected key=value"):
        cli._parse_override("novalue")


def test_unknown_set_key_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "node", "--check", "--set", "net.listen_adr=x")
    assert code == 1 and "did you mean 'net.listen_addr'" in err


def test_demo_delegates(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[str, list[str]]] = []
    demo = types.ModuleType("integration.demo")
    demo.main = lambda argv: calls.append(("demo", argv)) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "integration.demo", demo)
    assert run(capsys, "demo", "--json", "out.json")[0] == 3
    assert calls == [("demo", ["--json", "out.json"])]
    no_argv = types.ModuleType("integration.demo")
    no_argv.main = lambda: calls.append(("demo", sys.argv[1:]))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "integration.demo", no_argv)
    argv_before = list(sys.argv)
    assert run(capsys, "demo", "--fast")[0] == 0, "a main() that reads sys.argv gets the arguments"
    assert sys.argv == argv_before and calls[-1] == ("demo", ["--fast"])


def test_missing_delegate_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "integration.demo", None)
    code, _, err = run(capsys, "demo")
    assert code == 1 and "main is not available" in err


RELAY = "ab" * 16


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["publish", "--relay", "xyz"], "is not a destination hash"),
        (["publish", "--relay", RELAY, "--allow", "12"], "is not an RNS identity hash"),
        (["publish", "--relay", RELAY, "--allow", RELAY, "--admit-all"], "not allowed with argument"),
        (["publish", "--relay", RELAY, "--stream-id", "-1"], "is not a stream id"),
        (["watch", "--relay", RELAY], "--stream-id"),
        (["publish"], "--relay"),
        (["watch", "--relay", RELAY, "--stream-id", "1"], "--identity"),
    ],
)
def test_publish_watch_argument_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["publish", "--admit-all"], ["watch", "--stream-id", "7"]])
def test_publish_watch_refuse_an_unknown_identity_before_starting_rns(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ciris_av_plugin import participant

    monkeypatch.setattr(participant, "start_client_rns", lambda *a, **k: pytest.fail("RNS started"))
    code, out, err = run(capsys, *command, "--relay", RELAY, "--identity", "nobody", "--data-dir", str(tmp_path))
    assert code == 1 and out == "" and "no identity store here" in err
    run(capsys, "keys", "create", "somebody", "--data-dir", str(tmp_path))
    code, out, err = run(capsys, *command, "--relay", RELAY, "--identity", "nobody", "--data-dir", str(tmp_path))
    assert code == 1 and out == "" and err.startswith("ciris-av: ") and "nobody" in err
