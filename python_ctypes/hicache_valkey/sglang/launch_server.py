"""``python -m hicache_valkey.sglang.launch_server <sglang args> --hicache-storage-backend valkey``

SGLang's launcher with one convenience: ``--hicache-storage-backend valkey`` (which SGLang itself
does not know) is rewritten to SGLang's ``dynamic`` form,

    --hicache-storage-backend dynamic --hicache-storage-backend-extra-config
      '{"backend_name":"valkey","module_path":"hicache_valkey.sglang",
        "class_name":"ValkeyHiCacheStorage","interface_v1":1,"host":...,"port":...,"db":...}'

with host/port/db/username/url filled from ``VALKEY_HOST``/``VALKEY_PORT``/``VALKEY_DB``/
``VALKEY_USERNAME``/``VALKEY_URL`` when set, merged under any extra config given on the command
line (inline JSON or ``@file.json|yaml|toml``; its keys win). The password is never copied into
the command line (SGLang logs its arguments): the library reads ``VALKEY_PASSWORD`` from the
environment of each scheduler process itself. Then SGLang's ``sglang.launch_server`` runs with
the rewritten arguments, in this process. Every other argument passes through untouched.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

BACKEND_FLAG = "--hicache-storage-backend"
EXTRA_FLAG = "--hicache-storage-backend-extra-config"
VALKEY = "valkey"
DYNAMIC_KEYS = {
    "backend_name": "valkey",
    "module_path": "hicache_valkey.sglang",
    "class_name": "ValkeyHiCacheStorage",
    "interface_v1": 1,
}


def _int_env(environ: Mapping[str, str], name: str) -> Optional[int]:
    v = environ.get(name, "").strip()
    if not v:
        return None
    try:
        return int(v)
    except ValueError:
        raise SystemExit(f"hicache_valkey.sglang.launch_server: {name}={v!r} is not an integer") from None


def extra_config_from_env(environ: Optional[Mapping[str, str]] = None) -> Dict[str, object]:
    """Connection settings from VALKEY_* (never the password, nor a URL that holds one)."""
    env = os.environ if environ is None else environ
    out: Dict[str, object] = {}
    url = env.get("VALKEY_URL", "").strip()
    if url and "@" not in url:
        out["url"] = url
    host = env.get("VALKEY_HOST", "").strip()
    if host:
        out["host"] = host
    for key, name in (("port", "VALKEY_PORT"), ("db", "VALKEY_DB")):
        v = _int_env(env, name)
        if v is not None:
            out[key] = v
    user = env.get("VALKEY_USERNAME", "").strip()
    if user:
        out["username"] = user
    return out


def _load_extra(value: str) -> Dict[str, object]:
    """SGLang's extra-config syntax: inline JSON, or @file in JSON, YAML or TOML."""
    if value.startswith("@"):
        path = Path(value[1:])
        text = path.read_text()
        suffix = path.suffix.lower()
        if suffix == ".toml":
            try:
                import tomllib  # type: ignore[import-not-found]
            except ImportError:  # Python < 3.11
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            import yaml  # type: ignore[import-untyped]

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    else:
        data = json.loads(value)
    if not isinstance(data, dict):
        raise SystemExit(f"hicache_valkey.sglang.launch_server: {EXTRA_FLAG} must be a JSON object, got {value!r}")
    return data


def rewrite_argv(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """The SGLang arguments with ``--hicache-storage-backend valkey`` in the dynamic form (a pure
    function of ``argv`` and ``environ``; ``argv`` excludes the program name)."""
    out: List[str] = []
    backend_at: List[Tuple[int, bool]] = []  # (position in `out`, written as --flag=value)
    extra_at: Optional[Tuple[int, bool]] = None  # the last extra config, likewise
    args = list(argv)
    i = 0
    while i < len(args):
        a = args[i]
        if a in (BACKEND_FLAG, EXTRA_FLAG) and i + 1 < len(args):
            out += [a, args[i + 1]]
            if a == BACKEND_FLAG:
                backend_at.append((len(out) - 1, False))
            else:
                extra_at = (len(out) - 1, False)
            i += 2
            continue
        out.append(a)
        if a.startswith(BACKEND_FLAG + "="):
            backend_at.append((len(out) - 1, True))
        elif a.startswith(EXTRA_FLAG + "="):
            extra_at = (len(out) - 1, True)
        i += 1

    def value(at: Tuple[int, bool]) -> str:
        pos, inline = at
        return out[pos].split("=", 1)[1] if inline else out[pos]

    def replace(at: Tuple[int, bool], flag: str, v: str) -> None:
        pos, inline = at
        out[pos] = f"{flag}={v}" if inline else v

    # argparse keeps the last occurrence: rewrite only when that one asks for valkey.
    if not backend_at or value(backend_at[-1]) != VALKEY:
        return list(argv)
    for at in backend_at:
        if value(at) == VALKEY:
            replace(at, BACKEND_FLAG, "dynamic")

    config: Dict[str, object] = extra_config_from_env(environ)
    if extra_at is not None:
        config.update(_load_extra(value(extra_at)))
    for k, v in DYNAMIC_KEYS.items():
        if k in ("module_path", "class_name"):
            config[k] = v
        else:
            config.setdefault(k, v)
    encoded = json.dumps(config, separators=(",", ":"))
    if extra_at is None:
        out += [EXTRA_FLAG, encoded]
    else:
        replace(extra_at, EXTRA_FLAG, encoded)
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    new = rewrite_argv(args, os.environ)
    if new != args and "--enable-hierarchical-cache" not in new:
        print(
            "hicache_valkey.sglang.launch_server: note: a storage backend needs "
            "--enable-hierarchical-cache",
            file=sys.stderr,
        )
    sys.argv = ["sglang.launch_server", *new]
    runpy.run_module("sglang.launch_server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
