"""Named, composable simulation scenarios read from TOML.

A scenario file sets the event-time window and the populations of the fleet::

    name = "hydra"
    include = ["base.toml"]          # merged first, in order; this file overrides them
    start = "2026-11-26T12:00:00Z"   # event time of the first possible event
    duration = "6h"                  # "90m", "30s", "1d" or a number of seconds

    [gateway]
    omit_client_share = 0.03         # share of benign tenants whose gateway sends no client group

    [benign.small_tenant]            # role . population name; the archetype defaults to the name
    accounts = 1600

    [attack.hydra_b]                 # a second campaign of an existing archetype
    archetype = "hydra"
    accounts = 200

Every population knob has a default in :mod:`simulator.archetypes`; a table only states
what it changes, and an unknown knob is an error (a typo must not silently do nothing).
Set ``accounts = 0`` to drop an included population.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simulator.archetypes import ARCHETYPES, GATEWAY_DEFAULTS, ROLES

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """A scenario file or override is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Population:
    """One homogeneous group of accounts: a benign archetype or one attack campaign family.

    ``knobs`` holds the archetype defaults merged with the scenario's overrides.
    """

    name: str
    role: str
    archetype: str
    knobs: Mapping[str, Any]


@dataclass(frozen=True)
class Scenario:
    """A resolved scenario: its event-time window (``start``, ``duration_s`` in seconds) and
    its populations."""

    name: str
    description: str
    start: datetime
    duration_s: float
    gateway: Mapping[str, Any]
    populations: tuple[Population, ...]
    source: Path | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def population(self, name: str) -> Population:
        """The population called ``name`` (``KeyError`` if the scenario has none)."""
        for pop in self.populations:
            if pop.name == name:
                return pop
        raise KeyError(name)


def parse_duration(value: str | float | int) -> float:
    """Seconds in ``value``: a number of seconds or a string like ``"6h"``, ``"90m"``, ``"1d"``.

    >>> parse_duration("90m"), parse_duration("6h"), parse_duration(45)
    (5400.0, 21600.0, 45.0)
    """
    if isinstance(value, bool):
        raise ScenarioError(f"duration must be a number or a string like '6h', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(value)
        if match is None:
            raise ScenarioError(f"duration {value!r} is not like '6h', '90m', '30s' or '3600'")
        seconds = float(match.group(1)) * _DURATION_UNIT_S[match.group(2)]
    if seconds <= 0:
        raise ScenarioError(f"duration must be positive, got {value!r}")
    return seconds


def parse_time(value: str | datetime) -> datetime:
    """An aware UTC datetime from an RFC 3339 string (``Z`` or offset) or a datetime."""
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ScenarioError(f"start {value!r} is not an RFC 3339 timestamp") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def list_scenarios() -> list[str]:
    """Names of the scenarios shipped in ``simulator/scenarios/``, sorted."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml") if not p.stem.startswith("_"))


def resolve_scenario_path(name_or_path: str | Path) -> Path:
    """The TOML file for a scenario name (``"demo"``) or a path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate.resolve()
    shipped = SCENARIO_DIR / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    if candidate.suffix == ".toml":
        # a relative include or a name given with its extension
        shipped = SCENARIO_DIR / candidate.name
        if shipped.exists():
            return shipped
    raise ScenarioError(
        f"no scenario {str(name_or_path)!r}: not a file and not one of {list_scenarios()}"
    )


def load_scenario(name_or_path: str, overrides: dict[str, Any] | None = None) -> Scenario:
    """Load a scenario by name or path, resolving ``include`` and applying ``overrides``.

    ``overrides`` is merged last, as nested tables (``{"attack": {"hydra": {"accounts": 10}}}``)
    or dotted keys (``{"attack.hydra.accounts": 10, "duration": "1h"}``).
    """
    path = resolve_scenario_path(name_or_path)
    raw = _load_with_includes(path, seen=())
    if overrides:
        raw = _deep_merge(raw, _expand_dotted(overrides))
    return _build(raw, path)


def _load_with_includes(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        chain = " -> ".join(str(p.name) for p in (*seen, path))
        raise ScenarioError(f"include cycle: {chain}")
    try:
        with path.open("rb") as handle:
            own = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc
    includes = own.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for include in includes:
        included = path.parent / include
        if not included.exists():
            included = resolve_scenario_path(include)
        merged = _deep_merge(merged, _load_with_includes(included.resolve(), (*seen, path)))
    return _deep_merge(merged, own)


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` merged in: tables merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        leaf = parts[-1]
        if isinstance(value, Mapping):
            node[leaf] = _deep_merge(node.get(leaf, {}), _expand_dotted(value))
        else:
            node[leaf] = value
    return nested


def _build(raw: Mapping[str, Any], path: Path) -> Scenario:
    known_top = {"name", "description", "start", "duration", *ROLES, "gateway"}
    unknown = sorted(set(raw) - known_top)
    if unknown:
        raise ScenarioError(f"{path.name}: unknown top-level keys {unknown}")
    gateway = dict(GATEWAY_DEFAULTS)
    for key, value in raw.get("gateway", {}).items():
        if key not in GATEWAY_DEFAULTS:
            raise ScenarioError(f"{path.name}: [gateway] has no knob {key!r}")
        gateway[key] = value
    populations: list[Population] = []
    for role in ROLES:
        for pop_name, table in raw.get(role, {}).items():
            if not isinstance(table, Mapping):
                raise ScenarioError(f"{path.name}: [{role}.{pop_name}] must be a table")
            populations.append(_build_population(path, role, pop_name, table, gateway))
    return Scenario(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        start=parse_time(raw.get("start", "2026-11-26T12:00:00Z")),
        duration_s=parse_duration(raw.get("duration", "6h")),
        gateway=gateway,
        populations=tuple(populations),
        source=path,
        raw=dict(raw),
    )


def _build_population(
    path: Path, role: str, name: str, table: Mapping[str, Any], gateway: Mapping[str, Any]
) -> Population:
    archetype = str(table.get("archetype", name))
    defaults = ARCHETYPES.get(archetype)
    if defaults is None:
        raise ScenarioError(
            f"{path.name}: [{role}.{name}] has unknown archetype {archetype!r};"
            f" known: {sorted(ARCHETYPES)}"
        )
    if defaults["role"] != role:
        raise ScenarioError(
            f"{path.name}: [{role}.{name}] archetype {archetype!r}"
            f" belongs under [{defaults['role']}]"
        )
    knobs = dict(defaults)
    if role == "benign":
        # gateways that omit groups are a property of the tenant's integration, not of attacks
        knobs["omit_client_share"] = gateway["omit_client_share"]
        knobs["omit_prompt_share"] = gateway["omit_prompt_share"]
    for key, value in table.items():
        if key == "archetype":
            continue
        if key not in defaults or key == "role":
            raise ScenarioError(f"{path.name}: [{role}.{name}] has no knob {key!r}")
        default = defaults[key]
        if isinstance(default, Mapping) and not isinstance(value, Mapping):
            raise ScenarioError(f"{path.name}: [{role}.{name}].{key} must be a table")
        knobs[key] = value
    return Population(name=name, role=role, archetype=archetype, knobs=knobs)
