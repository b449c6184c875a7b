"""The usage tool: `flask --app app usage` prints the usage ledger, summed per key, model and day
(or raw records with --records), as a table or CSV (docs/operations.md "Usage").

Reads the database named by RELAY_DATABASE_URL; it writes nothing but the schema, which it
brings up to date like a starting worker does.
"""

from __future__ import annotations

from typing import Any

import click

import config
from services.core.errors import GatewayError, InvalidRequestError
from services.usage import query
from services.usage.store import UsageStore, mask


@click.command("usage", help="Show the usage ledger: per key, model and day, or raw records.")
@click.option(
    "--by",
    "group_by",
    default="key,model,day",
    show_default=True,
    help="comma-separated groups: key, model, day, backend, endpoint",
)
@click.option("--since", help="from this ISO date or date-time (UTC unless it says)")
@click.option("--until", help="to this date (included) or date-time (excluded)")
@click.option("--key", help="only this key's usage")
@click.option("--model", help="only this model's usage")
@click.option("--records", is_flag=True, help="raw records, newest first, instead of sums")
@click.option("--limit", type=click.IntRange(1, query.MAX_ROWS), help="at most this many rows")
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table")
def usage(
    group_by: str,
    since: str | None,
    until: str | None,
    key: str | None,
    model: str | None,
    records: bool,
    limit: int | None,
    as_csv: bool,
) -> None:
    try:
        settings = config.load().usage
    except config.ConfigError as e:
        raise click.ClickException(str(e)) from None
    if not settings.enabled:
        raise click.ClickException("the usage ledger is off (RELAY_USAGE=off)")
    params = {"since": since, "until": until, "key": key, "model": model}
    params |= {} if records else {"group_by": group_by}
    if limit is not None:
        params["limit"] = str(min(limit, query.MAX_RECORDS if records else query.MAX_ROWS))
    try:
        q = query.parse_query({k: v for k, v in params.items() if v is not None}, records=records)
    except InvalidRequestError as e:
        raise click.BadParameter(e.message, param_hint=f"--{e.param}") from None
    try:
        store = UsageStore.open(settings.database_url, settings.pool_size)
        store.migrate()
    except Exception as e:  # say why in one line, without the URL's password
        cause = getattr(e, "orig", None) or e
        why = mask(" ".join(str(cause).split()), settings.database_url)[:300]
        raise click.ClickException(f"cannot open the usage database: {why}") from None
    try:
        if records:
            rows, columns = query.records(store.engine, q), query.RECORD_COLUMNS
        else:
            rows, more, _ = query.summary(store.engine, q)
            columns = query.summary_columns(q.group_by)
            if more:
                click.echo(f"(only the first {q.limit} rows)", err=True)
    except GatewayError as e:
        raise click.ClickException(e.message) from None
    if as_csv:
        click.echo(query.to_csv(rows, columns), nl=False)
    else:
        click.echo(_table(rows, columns))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[_text(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    if not rows:
        lines.append("(no usage)")
    return "\n".join(line.rstrip() for line in lines)


def _text(value: Any) -> str:
    # One line per row: a caller's model name or path may hold any character.
    text = "-" if value is None else str(value)
    return text.encode("unicode_escape").decode("ascii")


if __name__ == "__main__":
    usage()
