"""``python -m hicache_valkey.sglang.launch_server``: the argv rewriting, as a pure function (no
model is launched)."""

from __future__ import annotations

import json
import sys

import pytest

from hicache_valkey.sglang.launch_server import extra_config_from_env, main, rewrite_argv

DYN = {
    "backend_name": "valkey",
    "module_path": "hicache_valkey.sglang",
    "class_name": "ValkeyHiCacheStorage",
    "interface_v1": 1,
}
BASE = ["--model-path", "Qwen/Qwen3-8B", "--page-size", "64", "--enable-hierarchical-cache"]


def extra_of(argv):
    for i, a in enumerate(argv):
        if a == "--hicache-storage-backend-extra-config":
            return json.loads(argv[i + 1])
        if a.startswith("--hicache-storage-backend-extra-config="):
            return json.loads(a.split("=", 1)[1])
    return None


def test_valkey_becomes_the_dynamic_form_filled_from_the_environment():
    env = {"VALKEY_HOST": "10.1.2.3", "VALKEY_PORT": "6380", "VALKEY_DB": "2", "VALKEY_PASSWORD": "secret"}
    out = rewrite_argv(BASE + ["--hicache-storage-backend", "valkey"], env)
    assert out[: len(BASE)] == BASE
    assert out[len(BASE): len(BASE) + 2] == ["--hicache-storage-backend", "dynamic"]
    assert extra_of(out) == {**DYN, "host": "10.1.2.3", "port": 6380, "db": 2}
    assert "secret" not in " ".join(out)  # the library reads VALKEY_PASSWORD itself


def test_defaults_without_environment():
    out = rewrite_argv(["--hicache-storage-backend=valkey"], {})
    assert out[0] == "--hicache-storage-backend=dynamic"
    assert extra_of(out) == DYN


def test_given_extra_config_is_merged_and_wins():
    given = {"port": 7000, "prefetch_threshold": 128, "interface_v1": 0, "checksum": True}
    argv = ["--hicache-storage-backend-extra-config", json.dumps(given), *BASE, "--hicache-storage-backend", "valkey"]
    out = rewrite_argv(argv, {"VALKEY_HOST": "h", "VALKEY_PORT": "1"})
    cfg = extra_of(out)
    assert cfg["host"] == "h" and cfg["port"] == 7000 and cfg["prefetch_threshold"] == 128
    assert cfg["interface_v1"] == 0 and cfg["checksum"] is True  # the user's choice stays
    assert cfg["module_path"] == "hicache_valkey.sglang" and cfg["class_name"] == "ValkeyHiCacheStorage"
    assert out.count("--hicache-storage-backend-extra-config") == 1


def test_extra_config_from_a_file(tmp_path):
    f = tmp_path / "valkey.json"
    f.write_text(json.dumps({"host": "from-file", "db": 3}))
    out = rewrite_argv([f"--hicache-storage-backend-extra-config=@{f}", "--hicache-storage-backend", "valkey"], {})
    assert extra_of(out) == {**DYN, "host": "from-file", "db": 3}
    t = tmp_path / "valkey.toml"
    t.write_text('host = "toml-host"\nport = 6390\n')
    out = rewrite_argv(["--hicache-storage-backend", "valkey", "--hicache-storage-backend-extra-config", f"@{t}"], {})
    assert extra_of(out) == {**DYN, "host": "toml-host", "port": 6390}


def test_other_backends_and_no_backend_pass_through():
    for argv in (BASE, BASE + ["--hicache-storage-backend", "file"],
                 BASE + ["--hicache-storage-backend", "valkey", "--hicache-storage-backend", "mooncake"],
                 BASE + ["--hicache-storage-backend", "dynamic", "--hicache-storage-backend-extra-config", "{}"]):
        assert rewrite_argv(argv, {"VALKEY_HOST": "x"}) == argv


def test_url_with_a_password_and_bad_numbers():
    assert extra_config_from_env({"VALKEY_URL": "valkey://u:p@h:1/0"}) == {}
    assert extra_config_from_env({"VALKEY_URL": "valkey://h:1/0", "VALKEY_USERNAME": "u"}) == {
        "url": "valkey://h:1/0", "username": "u"}
    with pytest.raises(SystemExit, match="VALKEY_PORT"):
        rewrite_argv(["--hicache-storage-backend", "valkey"], {"VALKEY_PORT": "abc"})
    with pytest.raises(SystemExit, match="JSON object"):
        rewrite_argv(["--hicache-storage-backend", "valkey", "--hicache-storage-backend-extra-config", "[1]"], {})


def test_main_runs_sglangs_launcher_with_the_rewritten_argv(monkeypatch):
    calls = []
    monkeypatch.setattr("runpy.run_module", lambda name, **kw: calls.append((name, kw, list(sys.argv))))
    monkeypatch.setattr(sys, "argv", ["x"])
    monkeypatch.setenv("VALKEY_PORT", "6399")
    main(BASE + ["--hicache-storage-backend", "valkey"])
    (name, kw, argv), = calls
    assert name == "sglang.launch_server" and kw["run_name"] == "__main__"
    assert argv[0] == "sglang.launch_server" and argv[1:] == rewrite_argv(
        BASE + ["--hicache-storage-backend", "valkey"], {"VALKEY_PORT": "6399"})


def test_sglangs_own_parser_accepts_the_result():
    pytest.importorskip("sglang", reason="SGLang is not installed")
    try:
        from sglang.srt.server_args import prepare_server_args
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"sglang.srt.server_args cannot be imported: {e}")
    argv = rewrite_argv(["--model-path", "/nonexistent/model", "--page-size", "64", "--enable-hierarchical-cache",
                         "--hicache-storage-backend", "valkey"], {"VALKEY_HOST": "127.0.0.1", "VALKEY_PORT": "6390"})
    args = prepare_server_args(argv)
    assert args.hicache_storage_backend == "dynamic"
    assert json.loads(args.hicache_storage_backend_extra_config) == {**DYN, "host": "127.0.0.1", "port": 6390}
