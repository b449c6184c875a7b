"""Settings for budgets (docs/access.md "Budgets"): tokens and requests a key may use per UTC day
and month, their defaults for every key (`[budgets]`, RELAY_BUDGET_*), how long a worker reuses
what it read of the ledger, and whether budgets fail open when the database cannot be read.

Part of the configuration: settings/access.py builds these into AccessSettings. Reads no
environment itself; imports only the standard library and settings.values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from settings.values import as_bool, as_float, as_int, as_table

# The budget fields, as written in `[keys.NAME]` (with the `budget_` prefix) and `[budgets]`.
BUDGET_FIELDS = ("tokens_per_day", "tokens_per_month", "requests_per_day", "requests_per_month")
ENV_NAMES = {f: f"RELAY_BUDGET_{f.upper()}" for f in BUDGET_FIELDS}


@dataclass(frozen=True, slots=True)
class Budgets:
    """A key's budgets. None means "not set here" (fall back to the default); 0 means none."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    requests_per_day: int | None = None
    requests_per_month: int | None = None

    def over(self, defaults: Budgets) -> Budgets:
        """These budgets with every unset one taken from `defaults`."""
        values = [getattr(self, f.name) for f in fields(self)]
        base = [getattr(defaults, f.name) for f in fields(defaults)]
        return Budgets(*(v if v is not None else b for v, b in zip(values, base, strict=True)))

    def items(self) -> list[tuple[str, int]]:
        """The budgets in force: (field name, amount), zero and unset ones left out."""
        return [(f, n) for f in BUDGET_FIELDS if (n := getattr(self, f))]

    @property
    def any(self) -> bool:
        return bool(self.items())


NO_BUDGETS = Budgets(0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    defaults: Budgets = NO_BUDGETS  # for every key that does not set its own
    cache_seconds: float = 2.0  # a worker reuses what it read of a key's spending this long
    fail_open: bool = True  # the database cannot be read: admit (True) or answer 503 (False)


def budget_settings(
    env: Mapping[str, str], doc: Mapping[str, Any], limits_fail_open: bool
) -> BudgetSettings:
    table = as_table(doc, "budgets")

    def pick(var: str, key: str, default: Any) -> tuple[str, Any]:
        if env.get(var, "") != "":
            return var, env[var]
        if key in table:
            return f"RELAY_CONFIG budgets.{key}", table[key]
        return var, default

    return BudgetSettings(
        defaults=Budgets(*(as_int(*pick(ENV_NAMES[f], f, 0), lo=0) for f in BUDGET_FIELDS)),
        cache_seconds=as_float(*pick("RELAY_BUDGET_CACHE_SECONDS", "cache_seconds", 2.0), lo=0.0),
        fail_open=as_bool(*pick("RELAY_BUDGET_FAIL_OPEN", "fail_open", limits_fail_open)),
    )


def key_budgets(where: str, table: Mapping[str, Any]) -> Budgets:
    """A `[keys.NAME]` table's own budgets (`budget_tokens_per_day = …`); unset ones are None."""
    return Budgets(
        *(
            as_int(f"{where}.budget_{f}", table[f"budget_{f}"], lo=0)
            if f"budget_{f}" in table
            else None
            for f in BUDGET_FIELDS
        )
    )
