"""A schema's catalog, described without its name or OIDs, so that two schemas can be compared.

Used to prove that a spare built by replaying a captured script is the same as one built by
running the migrations: tables, columns (in order, by position among the live ones: a column
the migrations dropped leaves a hole in the attribute numbers that a table built in its final
shape does not have), types, defaults, constraints, indexes, sequences and their values, views,
functions, triggers, rules, policies, comments, owners and grants, optionally each table's rows,
and the migrations recorded in ``django_migrations``.
"""

import re

from django.db import transaction
from django_tenants.utils import quote_schema_name

from core.db import connection

PLACEHOLDER = "{schema}"

# Each query takes the schema's name as its one parameter; rows are sorted, so order is irrelevant.
_QUERIES = {
    "schema": """
        SELECT pg_get_userbyid(n.nspowner), n.nspacl::text, obj_description(n.oid, 'pg_namespace')
          FROM pg_namespace n WHERE n.nspname = %s
    """,
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, c.reloptions::text, c.relrowsecurity,
               c.relforcerowsecurity, c.relreplident, pg_get_userbyid(c.relowner), c.relacl::text,
               obj_description(c.oid, 'pg_class'), c.relispartition, am.amname, c.reltablespace,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_am am ON am.oid = c.relam
         WHERE n.nspname = %s
    """,
    "columns": """
        SELECT c.relname, row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), a.attname,
               format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
               co.collname,
               pg_get_expr(d.adbin, d.adrelid), a.attacl::text, col_description(c.oid, a.attnum),
               a.attstattarget, a.attstorage, a.attcompression
          FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
          LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE n.nspname = %s AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT coalesce(c.relname, t.typname), k.conname, k.contype, k.condeferrable, k.condeferred,
               k.convalidated, k.connoinherit, k.conislocal, pg_get_constraintdef(k.oid),
               obj_description(k.oid, 'pg_constraint')
          FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
          LEFT JOIN pg_class c ON c.oid = k.conrelid
          LEFT JOIN pg_type t ON t.oid = k.contypid
         WHERE n.nspname = %s
    """,
    "indexes": """
        SELECT ic.relname, tc.relname, pg_get_indexdef(i.indexrelid), i.indisunique, i.indisprimary,
               i.indisclustered, i.indisreplident, i.indisvalid, i.indimmediate
          FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
          JOIN pg_class tc ON tc.oid = i.indrelid JOIN pg_namespace n ON n.oid = tc.relnamespace
         WHERE n.nspname = %s
    """,
    "sequences": """
        SELECT s.sequencename, s.data_type::text, s.start_value, s.min_value, s.max_value,
               s.increment_by, s.cycle, s.cache_size, s.last_value,
               (SELECT dc.relname || '.' || da.attname || ':' || dep.deptype::text
                  FROM pg_depend dep JOIN pg_class dc ON dc.oid = dep.refobjid
                  JOIN pg_attribute da ON da.attrelid = dep.refobjid AND da.attnum = dep.refobjsubid
                 WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                   AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i'))
          FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
          JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = n.oid
         WHERE s.schemaname = %s
    """,
    "functions": """
        SELECT p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
               pg_get_userbyid(p.proowner), p.proacl::text, obj_description(p.oid, 'pg_proc'),
               CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END
          FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = %s
    """,
    "triggers": """
        SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid),
               obj_description(t.oid, 'pg_trigger')
          FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND NOT t.tgisinternal
    """,
    "types": """
        SELECT t.typname, t.typtype, pg_get_userbyid(t.typowner), t.typacl::text,
               format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e
                 WHERE e.enumtypid = t.oid)::text,
               obj_description(t.oid, 'pg_type')
          FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE n.nspname = %s
    """,
    "rules": """
        SELECT c.relname, r.rulename, r.ev_enabled, pg_get_ruledef(r.oid)
          FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %s AND r.rulename <> '_RETURN'
    """,
    "policies": """
        SELECT c.relname, p.polname, p.polcmd, p.polpermissive, p.polroles::regrole[]::text,
               pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
          FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = %s
    """,
    "default_privileges": """
        SELECT pg_get_userbyid(d.defaclrole), d.defaclobjtype, d.defaclacl::text
          FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace
         WHERE n.nspname = %s
    """,
    "extensions": """
        SELECT e.extname, e.extversion FROM pg_extension e
          JOIN pg_namespace n ON n.oid = e.extnamespace WHERE n.nspname = %s
    """,
}


def _normalise(value: object, schema_name: str) -> object:
    if isinstance(value, str):
        # The schema's own name where a definition names it (qualified names, regclass literals).
        return re.sub(rf'(?<![\w$])("?){re.escape(schema_name)}\1(?![\w$])', PLACEHOLDER, value)
    return value


def schema_catalog(schema_name: str, *, data: bool = True) -> dict[str, list[tuple]]:
    """Everything about the schema that two equivalent builds must share, name and OIDs left out.

    With ``data``, each table's rows too (as sorted text; ``django_migrations.applied`` left out,
    it is a timestamp), and always the migrations recorded, in the order they were recorded.
    """
    catalog: dict[str, list[tuple]] = {}
    quoted = quote_schema_name(schema_name)
    with transaction.atomic():
        # Names in the schema itself print unqualified, as in every other schema.
        connection.set_schema(schema_name)
        try:
            with connection.cursor() as cursor:
                for section, query in _QUERIES.items():
                    cursor.execute(query, [schema_name])
                    rows = [tuple(_normalise(v, schema_name) for v in row) for row in cursor.fetchall()]
                    catalog[section] = sorted(rows, key=repr)
                cursor.execute(
                    "SELECT to_regclass(%s) IS NOT NULL", [f"{quoted}.django_migrations"]
                )
                if cursor.fetchone()[0]:
                    cursor.execute(f"SELECT app, name FROM {quoted}.django_migrations ORDER BY id")
                    catalog["django_migrations"] = cursor.fetchall()
                if data:
                    catalog["data"] = _table_data(cursor, schema_name)
        finally:
            connection.set_schema_to_public()
    return catalog


def _table_data(cursor, schema_name: str) -> list[tuple]:
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
        [schema_name],
    )
    tables = [name for (name,) in cursor.fetchall()]
    found = []
    for table in tables:
        source = f"{quote_schema_name(schema_name)}.{quote_schema_name(table)}"
        row = "(t.id, t.app, t.name)" if table == "django_migrations" else "t"
        rows = f"string_agg({row}::text, E'\\n' ORDER BY {row}::text)"
        cursor.execute(f"SELECT count(*), md5(coalesce({rows}, '')) FROM {source} t")
        count, digest = cursor.fetchone()
        found.append((table, count, digest))
    return found


def catalog_differences(expected: dict[str, list[tuple]], got: dict[str, list[tuple]]) -> list[str]:
    """What differs between two catalogs, one line per row, for an error message or a test."""
    lines = []
    for section in sorted(set(expected) | set(got)):
        want, have = expected.get(section, []), got.get(section, [])
        if want == have:
            continue
        want_set, have_set = set(want), set(have)
        for row in sorted(want_set - have_set, key=repr)[:10]:
            lines.append(f"{section}: missing {row}")
        for row in sorted(have_set - want_set, key=repr)[:10]:
            lines.append(f"{section}: unexpected {row}")
        if want_set == have_set:
            lines.append(f"{section}: same rows in another order")
    return lines
