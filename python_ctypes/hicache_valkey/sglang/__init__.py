"""SGLang integration: ``ValkeyHiCacheStorage``, a HiCache L3 storage backend.

SGLang is imported only when one of the names below is first used, so ``hicache_valkey`` (and
``hicache_valkey.sglang.launch_server``'s argument rewriting) work without SGLang installed.

* ``ValkeyHiCacheStorage`` -- the backend class SGLang's ``dynamic`` backend path loads
  (``module_path="hicache_valkey.sglang"``, ``class_name="ValkeyHiCacheStorage"``): v0, v1 and
  the v2 interface of hybrid models (Mamba / SWA / draft / indexer side pools, see ``.hybrid``).
* ``create_backend(config, mem_pool_host=None, host=..., port=..., db=...)`` -- programmatic
  creation through SGLang's ``StorageBackendFactory.create_backend("dynamic", ...)``.
* ``python -m hicache_valkey.sglang.launch_server <sglang args> --hicache-storage-backend valkey``
  -- SGLang's launcher with ``valkey`` rewritten to the dynamic form.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ValkeyHiCacheStorage": ".backend",
    "create_backend": ".backend",
    "default_storage_config": ".backend",
    "dynamic_extra_config": ".backend",
    "resolve_settings": ".backend",
    "SETTING_TYPES": ".backend",
    "describe_pool": ".page_format",
    "PageFormat": ".page_format",
    "describe_side_pool": ".page_format",
    "SidePoolFormat": ".page_format",
    "rewrite_argv": ".launch_server",
    "extra_config_from_env": ".launch_server",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
