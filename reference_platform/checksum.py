# Copyright: contributors to cepcomunicacion.backup; GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-table row counts and content checksums of a PostgreSQL database.

Part of the reference platform (``reference_platform/``), not of the collection. Tests and drills use it
to prove "the rows restored equal the rows backed up".

Definition (reproducible in plain SQL, so anyone can recompute it)::

    checksum(table) = md5( concatenation, in primary-key order, of md5(row::text) )
                    = SELECT md5(string_agg(md5(t::text), '' ORDER BY <pk>)) FROM table t

Tables without a primary key are ordered by the row hash itself (a multiset checksum). An empty
table has checksum ``md5('')``. The session is pinned (TimeZone UTC, DateStyle ISO, ...) so the
text form of a row does not depend on client or server settings. The aggregation runs on the
server; Python only receives one short row per table, so a multi-GB table costs no client memory.
Every user table (relkind r) in every schema except pg_catalog, information_schema, pg_toast
and temporary schemas is covered; keys are ``schema.table``.

    import sys; sys.path.insert(0, "platform")    # reference_platform/ is not a package (stdlib clash)
    import checksum
    before = checksum.database_checksums("host=127.0.0.1 port=5432 user=postgres dbname=app")
    ...
    assert checksum.diff(before, after) == {}

CLI: ``python3 reference_platform/checksum.py --dsn "..." [--schema S] [--table T]`` prints JSON
``{"schema.table": {"rows": N, "checksum": "<md5>"}}``; the password comes from PGPASSWORD.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

try:
    import psycopg2
    from psycopg2 import sql as pgsql
    from psycopg2.extensions import make_dsn
except ImportError:  # pragma: no cover
    sys.exit("checksum.py needs psycopg2 (pip install psycopg2-binary)")

__all__ = ["database_checksums", "table_checksum", "list_tables", "diff", "EMPTY_CHECKSUM"]

EMPTY_CHECKSUM = "d41d8cd98f00b204e9800998ecf8427e"  # md5('')

# Settings that change how values print as text are pinned so checksums are comparable.
SESSION_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, MDY'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
    "SET LOCAL search_path = pg_catalog",
    "SET LOCAL work_mem = '256MB'",  # sort (row hash, key) pairs in memory on big tables
)

_TABLES_SQL = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg_temp_%%' AND n.nspname NOT LIKE 'pg_toast_temp_%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY(%(schemas)s::text[]))
ORDER BY 1, 2
"""

_PK_SQL = """
SELECT a.attname, a.attcollation <> 0
FROM pg_index i
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %s::regclass AND i.indisprimary
ORDER BY k.ord
"""


@contextlib.contextmanager
def _snapshot(conn_or_dsn):
    """A cursor in a read-only REPEATABLE READ transaction with pinned text settings.
    Leaves a caller's connection exactly as it was (settings are SET LOCAL, rolled back)."""
    if isinstance(conn_or_dsn, str):
        conn, owned = psycopg2.connect(conn_or_dsn), True
    else:
        conn, owned = conn_or_dsn, False
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise ValueError("the connection has an open transaction; commit or roll back "
                             "before computing checksums (or pass a DSN)")
    saved = (conn.autocommit, conn.isolation_level, conn.readonly)
    try:
        conn.autocommit = False
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with conn.cursor() as cur:
            for setting in SESSION_SETTINGS:
                cur.execute(setting)
            yield cur
    finally:
        if not conn.closed:
            conn.rollback()
            if owned:
                conn.close()
            else:
                conn.set_session(isolation_level=saved[1], readonly=saved[2])
                conn.autocommit = saved[0]


def list_tables(conn_or_dsn, schemas=None):
    """[(schema, table)] of the user tables the checksum covers, sorted."""
    with _snapshot(conn_or_dsn) as cur:
        cur.execute(_TABLES_SQL, {"schemas": list(schemas) if schemas else None})
        return cur.fetchall()


def _checksum(cur, schema, table):
    qualified = pgsql.Identifier(schema, table)
    cur.execute(_PK_SQL, (qualified.as_string(cur),))
    pk = cur.fetchall()
    # only the row hash and the key columns are sorted; text keys sort in collation "C" so the
    # order (and so the checksum) is the same on any cluster, whatever its default collation
    columns = [pgsql.SQL("md5(t::text) AS cep_row_md5")]
    order = []
    for i, (col, collatable) in enumerate(pk):
        alias = pgsql.Identifier("cep_pk_%d" % i)
        columns.append(pgsql.SQL("{} AS {}").format(pgsql.Identifier("t", col), alias))
        order.append(pgsql.SQL('{} COLLATE "C"' if collatable else "{}").format(alias))
    if not order:  # no primary key: order by the row hash (a multiset checksum)
        order = [pgsql.SQL("cep_row_md5")]
    cur.execute(pgsql.SQL(
        "SELECT count(*), md5(coalesce(string_agg(cep_row_md5, '' ORDER BY {order}), '')) "
        "FROM (SELECT {columns} FROM {table} AS t) AS rows"
    ).format(order=pgsql.SQL(", ").join(order), columns=pgsql.SQL(", ").join(columns),
             table=qualified))
    rows, digest = cur.fetchone()
    return {"rows": rows, "checksum": digest}


def table_checksum(conn_or_dsn, schema, table):
    """{"rows": int, "checksum": str} for one table."""
    with _snapshot(conn_or_dsn) as cur:
        return _checksum(cur, schema, table)


def database_checksums(conn_or_dsn, schemas=None, tables=None):
    """{"schema.table": {"rows": int, "checksum": str}} for every user table.

    ``schemas``: only these schemas; ``tables``: only these names (``table`` or
    ``schema.table``). All tables are read in one REPEATABLE READ snapshot, so the result is
    consistent even while the database is being written to.
    """
    wanted = set(tables or ())
    result = {}
    with _snapshot(conn_or_dsn) as cur:
        cur.execute(_TABLES_SQL, {"schemas": list(schemas) if schemas else None})
        for schema, table in cur.fetchall():
            key = "%s.%s" % (schema, table)
            if not wanted or key in wanted or table in wanted:
                result[key] = _checksum(cur, schema, table)
    return result


def diff(expected, actual):
    """Tables whose rows or checksum differ (or that exist on one side only).

    Returns ``{"schema.table": {"expected": {...} | None, "actual": {...} | None}}``;
    an empty dict means identical.
    """
    out = {}
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            out[key] = {"expected": expected.get(key), "actual": actual.get(key)}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Row counts and content checksums of every user table, as JSON.",
        epilog="The password comes from PGPASSWORD or ~/.pgpass (libpq), never from a flag.")
    parser.add_argument("--dsn", default="", help="libpq connection string (without password)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--user")
    parser.add_argument("--dbname")
    parser.add_argument("--schema", action="append", help="only this schema (repeatable)")
    parser.add_argument("--table", action="append", help="only this table (repeatable)")
    parser.add_argument("--compare", metavar="FILE",
                        help="compare with an earlier JSON output; exit 1 and print the "
                             "differences if any")
    args = parser.parse_args(argv)
    params = {k: str(getattr(args, k)) for k in ("host", "port", "user", "dbname")
              if getattr(args, k) is not None}
    try:
        result = database_checksums(make_dsn(args.dsn, **params), schemas=args.schema,
                                    tables=args.table)
    except psycopg2.Error as exc:
        print("checksum: %s" % str(exc).strip(), file=sys.stderr)
        return 2
    if args.compare:
        with open(args.compare, encoding="utf-8") as fh:
            differences = diff(json.load(fh), result)
        print(json.dumps(differences, indent=2, sort_keys=True))
        return 1 if differences else 0
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
