"""Sharing between engines: two separate processes, each with its own real SGLang host pool and
backend instance for the same model; one writes pages, the other reads them back as hits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sglang", reason="SGLang is not installed (scripts/sglang-venv.sh makes a venv with it)")
pytest.importorskip("torch", reason="torch is not installed")

pytestmark = pytest.mark.sglang

ENGINE = Path(__file__).resolve().parent / "engine_proc.py"


def run_engine(*args) -> dict:
    out = subprocess.run([sys.executable, str(ENGINE), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind,layout", [("mha", "layer_first"), ("mla", "page_first_direct")])
def test_one_engine_writes_another_reads(valkey, model, kind, layout):
    pages = 6
    w = run_engine("write", valkey.port, model, kind, layout, pages, 1234)
    assert w["stored"] == [True] * pages
    r = run_engine("read", valkey.port, model, kind, layout, pages, 1234)
    assert r["value_format"] == w["value_format"]
    assert r["exists"] == pages
    assert r["hits"] == [True] * pages
    assert r["equal"] == [True] * pages  # byte for byte
