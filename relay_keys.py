"""The key tool: `flask --app app keys create|list|revoke|enable` (or `python -m relay_keys ...`).

Edits the `[keys.NAME]` tables of the config file (RELAY_CONFIG, or --file). `create` prints the
new secret once, on stdout alone, and writes only its SHA-256 digest; a running gateway picks
up every change within a second or two, without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

import config
from services.access import keyfile
from settings.access import LIMIT_FIELDS
from settings.budgets import BUDGET_FIELDS


def _path(file: str | None) -> str:
    path = file or config.load().config_file
    if not path:
        raise click.UsageError("set RELAY_CONFIG to the TOML file that holds the keys, or --file")
    return path


def _run(action: object) -> None:
    try:
        action()  # type: ignore[operator]
    except config.ConfigError as e:
        raise click.ClickException(str(e)) from None


FILE = click.option("--file", "file", help="config file to edit (default: RELAY_CONFIG)")


@click.group("keys", help="Create, list and revoke named API keys in the config file.")
def keys() -> None:
    pass


@keys.command("create")
@click.argument("name")
@click.option("--model", "models", multiple=True, help="allowed model or glob (repeatable)")
@click.option("--expires", help="expiry, e.g. 2027-01-01T00:00:00Z")
@click.option("--rpm", type=click.IntRange(0), help="requests per minute")
@click.option("--rph", type=click.IntRange(0), help="requests per hour")
@click.option("--rpd", type=click.IntRange(0), help="requests per day")
@click.option("--tpm", type=click.IntRange(0), help="tokens per minute")
@click.option("--cache-group", help="share cached replies with other keys of this group")
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="KIND=N",
    help='a budget, e.g. tokens_per_month=5000000 (repeatable; docs/access.md "Budgets")',
)
@FILE
def create(
    name: str,
    models: tuple[str, ...],
    expires: str | None,
    rpm: int | None,
    rph: int | None,
    rpd: int | None,
    tpm: int | None,
    cache_group: str | None,
    budgets: tuple[str, ...],
    file: str | None,
) -> None:
    """Create key NAME; its secret is printed once and stored nowhere."""
    amounts: dict[str, int] = {}
    for given in budgets:
        kind, _, number = given.partition("=")
        if kind.strip() not in BUDGET_FIELDS or not number.strip().isdigit():
            raise click.BadParameter(
                f"use KIND=N with KIND one of {', '.join(BUDGET_FIELDS)}", param_hint="--budget"
            )
        amounts[kind.strip()] = int(number)
    limits = {
        field: value
        for field, value in zip(LIMIT_FIELDS, (rpm, rph, rpd, tpm), strict=True)
        if value is not None
    }
    when = None
    if expires:
        try:
            when = datetime.fromisoformat(expires)
        except ValueError:
            raise click.BadParameter("use a date-time like 2027-01-01T00:00:00Z") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    path = _path(file)

    def action() -> None:
        secret = keyfile.create_key(
            path,
            name,
            models=models,
            expires=when,
            limits=limits,
            cache_group=cache_group,
            budgets=amounts,
        )
        click.echo(f"created key '{name}' in {path}; its secret, shown only now:", err=True)
        click.echo(secret)

    _run(action)


@keys.command("list")
@FILE
def list_keys(file: str | None) -> None:
    """List the named keys: state, expiry, models, limits and budgets (never secrets)."""
    path = _path(file)
    now = datetime.now(UTC)

    def action() -> None:
        for k in keyfile.list_keys(path):
            state = "revoked" if not k.enabled else "enabled"
            if k.enabled and k.expires is not None and k.expires <= now:
                state = "expired"
            limits = ", ".join(
                f"{f}={getattr(k.limits, f)}"
                for f in LIMIT_FIELDS
                if getattr(k.limits, f) is not None
            )
            budgets = ", ".join(
                f"{f}={getattr(k.budgets, f)}"
                for f in BUDGET_FIELDS
                if getattr(k.budgets, f) is not None
            )
            expiry = k.expires.isoformat() if k.expires else "never"
            click.echo(
                f"{k.name}\t{state}\texpires={expiry}\tmodels={','.join(k.models)}"
                f"\t{limits or 'default limits'}\t{budgets or 'default budgets'}"
            )

    _run(action)


@keys.command("revoke")
@click.argument("name")
@FILE
def revoke(name: str, file: str | None) -> None:
    """Turn key NAME off (enabled = false); a running gateway refuses it within seconds."""
    _switch(name, file, enabled=False)


@keys.command("enable")
@click.argument("name")
@FILE
def enable(name: str, file: str | None) -> None:
    """Turn key NAME back on."""
    _switch(name, file, enabled=True)


def _switch(name: str, file: str | None, *, enabled: bool) -> None:
    path = _path(file)
    _run(lambda: keyfile.set_enabled(path, name, enabled))
    click.echo(f"{'enabled' if enabled else 'revoked'} key '{name}' in {path}", err=True)


if __name__ == "__main__":
    keys()
