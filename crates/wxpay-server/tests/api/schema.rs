//! The SQLite and PostgreSQL migrations describe one schema: the same tables, columns (with
//! compatible types, nullability, defaults and primary keys), indexes, foreign keys and CHECK
//! constraints. A column, index or constraint added to one backend only fails here.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::Row as _;
use wxpay_server::store::{Backend, Store, StoreOptions};

use crate::helpers::TestDatabase;

/// One column as both backends can describe it.
#[derive(Debug, PartialEq, Eq)]
struct Column {
    /// `int`, `text` or `float`: the portable types the store uses.
    kind: &'static str,
    not_null: bool,
    has_default: bool,
}

/// One table, normalised.
#[derive(Debug, Default, PartialEq, Eq)]
struct Table {
    columns: BTreeMap<String, Column>,
    primary_key: Vec<String>,
    /// Every index but the primary key's: (columns, unique).
    indexes: BTreeSet<(Vec<String>, bool)>,
    /// Indexes made by `CREATE INDEX`, by name.
    named_indexes: BTreeSet<String>,
    /// (column, referenced table, referenced column, on delete).
    foreign_keys: BTreeSet<(String, String, String, String)>,
    checks: usize,
}

fn kind(declared: &str) -> &'static str {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int" | "smallint" => "int",
        "text" => "text",
        "real" | "double precision" => "float",
        other => panic!("a column type the store does not use: {other}"),
    }
}

async fn sqlite_schema(store: &Store) -> BTreeMap<String, Table> {
    let pool = store.pool();
    let tables = sqlx::query(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut schema = BTreeMap::new();
    for t in tables {
        let name: String = t.get(0);
        let sql: String = t.get(1);
        let mut table = Table {
            checks: sql.to_ascii_uppercase().matches("CHECK (").count(),
            ..Table::default()
        };
        let mut pk = Vec::new();
        for c in
            sqlx::query("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info($1)")
                .bind(&name)
                .fetch_all(pool)
                .await
                .unwrap()
        {
            let column: String = c.get(0);
            let declared: String = c.get(1);
            let not_null: i64 = c.get(2);
            let default: Option<String> = c.get(3);
            let in_pk: i64 = c.get(4);
            if in_pk > 0 {
                pk.push((in_pk, column.clone()));
            }
            table.columns.insert(
                column,
                Column {
                    kind: kind(&declared),
                    // A primary key is never null (PostgreSQL says so; SQLite may not).
                    not_null: not_null == 1 || in_pk > 0,
                    has_default: default.is_some(),
                },
            );
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
        for i in sqlx::query("SELECT name, \"unique\", origin FROM pragma_index_list($1)")
            .bind(&name)
            .fetch_all(pool)
            .await
            .unwrap()
        {
            let index: String = i.get(0);
            let unique: i64 = i.get(1);
            let origin: String = i.get(2);
            if origin == "pk" {
                continue;
            }
            let columns: Vec<String> =
                sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(pool)
                    .await
                    .unwrap();
            table.indexes.insert((columns, unique == 1));
            if origin == "c" {
                table.named_indexes.insert(index);
            }
        }
        for f in sqlx::query(
            "SELECT \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list($1)",
        )
        .bind(&name)
        .fetch_all(pool)
        .await
        .unwrap()
        {
            table.foreign_keys.insert((
                f.get(0),
                f.get(1),
                f.get(2),
                f.get::<String, _>(3).to_uppercase(),
            ));
        }
        schema.insert(name, table);
    }
    schema
}

async fn postgres_schema(store: &Store) -> BTreeMap<String, Table> {
    let pool = store.pool();
    let mut schema: BTreeMap<String, Table> = BTreeMap::new();
    for c in sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text, \
         column_default::text, is_identity::text \
         FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        let table: String = c.get(0);
        let column: String = c.get(1);
        let declared: String = c.get(2);
        let nullable: String = c.get(3);
        let default: Option<String> = c.get(4);
        let identity: String = c.get(5);
        schema.entry(table).or_default().columns.insert(
            column,
            Column {
                kind: kind(&declared),
                not_null: nullable == "NO",
                // An identity column is SQLite's INTEGER PRIMARY KEY: no declared default.
                has_default: default.is_some() && identity != "YES",
            },
        );
    }
    for i in sqlx::query(
        "SELECT t.relname::text, i.relname::text, ix.indisunique, ix.indisprimary, \
         (SELECT string_agg(a.attname::text, ',' ORDER BY k.ord) \
            FROM unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum), \
         EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid) \
         FROM pg_index ix JOIN pg_class t ON t.oid = ix.indrelid \
         JOIN pg_class i ON i.oid = ix.indexrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = 'public' AND t.relname NOT LIKE '\\_sqlx%'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        let table: String = i.get(0);
        let index: String = i.get(1);
        let unique: bool = i.get(2);
        let primary: bool = i.get(3);
        let columns: Vec<String> = i
            .get::<String, _>(4)
            .split(',')
            .map(str::to_owned)
            .collect();
        let backs_constraint: bool = i.get(5);
        let t = schema.entry(table).or_default();
        if primary {
            t.primary_key = columns;
            continue;
        }
        t.indexes.insert((columns, unique));
        if !backs_constraint {
            t.named_indexes.insert(index);
        }
    }
    for f in sqlx::query(
        "SELECT cl.relname::text, a.attname::text, rt.relname::text, ra.attname::text, \
         c.confdeltype::text \
         FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid \
         JOIN pg_class rt ON rt.oid = c.confrelid \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         JOIN pg_attribute ra ON ra.attrelid = c.confrelid AND ra.attnum = c.confkey[1] \
         JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE c.contype = 'f' AND n.nspname = 'public'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        let on_delete = match f.get::<String, _>(4).as_str() {
            "a" => "NO ACTION",
            "c" => "CASCADE",
            "r" => "RESTRICT",
            "n" => "SET NULL",
            "d" => "SET DEFAULT",
            other => panic!("on delete {other}"),
        };
        schema.entry(f.get(0)).or_default().foreign_keys.insert((
            f.get(1),
            f.get(2),
            f.get(3),
            on_delete.to_owned(),
        ));
    }
    for c in sqlx::query(
        "SELECT cl.relname::text, COUNT(*) FROM pg_constraint c \
         JOIN pg_class cl ON cl.oid = c.conrelid \
         JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE c.contype = 'c' AND n.nspname = 'public' GROUP BY cl.relname",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        let count: i64 = c.get(1);
        schema.entry(c.get(0)).or_default().checks = usize::try_from(count).unwrap();
    }
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_and_postgresql_schemas_agree() {
    let sqlite_db = TestDatabase::new(Backend::Sqlite).await;
    let postgres_db = TestDatabase::new(Backend::Postgres).await;
    let sqlite = Store::connect(&sqlite_db.url, &StoreOptions::default())
        .await
        .unwrap();
    let postgres = Store::connect(&postgres_db.url, &StoreOptions::default())
        .await
        .unwrap();
    let (a, b) = (
        sqlite_schema(&sqlite).await,
        postgres_schema(&postgres).await,
    );
    assert!(a.len() >= 10, "the SQLite schema was read: {:?}", a.keys());
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (name, table) in &a {
        assert_eq!(
            table, &b[name],
            "table {name}: SQLite (left) and PostgreSQL (right) differ"
        );
    }
    sqlite.close().await;
    postgres.close().await;
}
