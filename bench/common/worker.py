"""Worker configs for the benchmarks, derived from the repository's wrangler.toml (top level)."""

from __future__ import annotations

import json
import tomllib

from bench.common import ROOT


# The Worker's entry module (wrangler.toml's main), relative to the repository; it imports
# ../build/index.js, so a snapshot keeps the two side by side.
ENTRY = "src/index.js"


def repo_wrangler() -> dict:
    return tomllib.loads((ROOT / "wrangler.toml").read_text())


def compat() -> tuple[str, list[str]]:
    """The repository's compatibility_date and compatibility_flags."""
    top = repo_wrangler()
    return top["compatibility_date"], list(top.get("compatibility_flags", []))


def wrangler_toml(name: str, main: str, variables: dict[str, str]) -> str:
    """A wrangler.toml for `wrangler dev` of a built Worker: the repository's compatibility
    settings, Durable Object bindings and migrations, with these [vars] (no build command)."""
    top = repo_wrangler()
    config: dict = {"name": name, "main": main}
    for key in ("compatibility_date", "compatibility_flags", "durable_objects", "migrations"):
        if key in top:
            config[key] = top[key]
    config["vars"] = variables
    return "\n".join(_toml(config)) + "\n"


def _toml(table: dict, prefix: str = "") -> list[str]:
    """TOML lines for a table of strings, numbers, booleans, lists, tables and lists of tables
    (JSON's literals are TOML's for all of these)."""
    def is_tables(v) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{k} = {json.dumps(v)}" for k, v in table.items()
             if not isinstance(v, dict) and not is_tables(v)]
    for k, v in table.items():
        if isinstance(v, dict):
            lines += [f"[{prefix}{k}]", *_toml(v, f"{prefix}{k}.")]
        elif is_tables(v):
            for item in v:
                lines += [f"[[{prefix}{k}]]", *_toml(item, f"{prefix}{k}.")]
    return lines
