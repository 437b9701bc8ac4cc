//! The row interface every transaction body is written against: get, insert and remove one row
//! by key, count a table, and visit a key range in order (forward or back). Each backend
//! implements it for its own transactions: redb's `ReadTransaction` and `WriteTransaction`
//! here, PostgreSQL's in `postgres`. So a transaction body (`read`, `write`, `gc`, `fsck`,
//! `audit`, ...) is one piece of code whatever the backend, and so is every invariant it keeps:
//! the metadata suite (`tests/it/meta_suite.rs`) runs it against both.
//!
//! A table is a [`Table`]: its name, its key shape and its value shape.
//! - Keys are a string, a u64, or a tuple of them, ordered as redb orders them: byte-wise,
//!   element by element. PostgreSQL's key columns are `text COLLATE "C"` (byte order) and
//!   `bigint`, and a tuple range is a row comparison, so both backends scan in one order.
//! - Values are bytes (a `codec` row), nothing (an index), or a u64 (a sequence).
//!
//! A scan hands each row to a visitor, borrowed, until the visitor answers `Break` or the range
//! ends. A visitor rather than an iterator, because a redb write transaction's range borrows
//! its open table, and because a network backend fetches rows in batches behind it; in
//! exchange a visitor must not touch the table it is visiting (redb refuses a second handle
//! of an open table in a write transaction): collect first, then write.
//!
//! A body may run more than once (a group commit retried without a failed neighbour, a
//! PostgreSQL serialization failure), so it depends only on its transaction and its captures.

// The shapes' conversions name their lifetime: elided, the trait's would be late-bound and
// its impls' early-bound, which do not match.
#![allow(clippy::elidable_lifetime_names)]

use std::marker::PhantomData;
use std::ops::{Bound, ControlFlow, RangeBounds};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

use super::MetaError;

/// What a visitor answers: go on, or stop the scan.
pub type Flow = ControlFlow<()>;

/// Go on scanning.
pub const NEXT: Result<Flow, MetaError> = Ok(ControlFlow::Continue(()));
/// Stop the scan.
pub const STOP: Result<Flow, MetaError> = Ok(ControlFlow::Break(()));

/// A scan's visitor: each row, borrowed, in key order.
pub type Visit<'f, K, V> =
    dyn for<'r> FnMut(<K as Key>::Ref<'r>, <V as Value>::Ref<'r>) -> Result<Flow, MetaError> + 'f;

/// Which way a scan walks its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Forward,
    Back,
}

/// A key shape: how a key is passed, stored in redb, and bound to PostgreSQL's columns.
pub trait Key: 'static {
    /// The key as callers pass it and visitors receive it.
    type Ref<'a>: Copy;
    /// redb's key type for the shape.
    type Redb: redb::Key + 'static;
    /// The PostgreSQL types of the key columns `k1`, `k2`, ..., in order.
    const COLUMNS: &'static [&'static str];

    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a>;
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a>;
    /// The key's parameters for PostgreSQL, one per column.
    fn params<'a>(k: Self::Ref<'a>, out: &mut Vec<Param<'a>>);
    /// The key of a PostgreSQL row whose first columns are the key columns.
    fn from_row(row: &tokio_postgres::Row) -> Result<Self::Ref<'_>, MetaError>;
}

/// A value shape: bytes, nothing, or a u64.
pub trait Value: 'static {
    /// The value as callers pass it and visitors receive it.
    type Ref<'a>: Copy;
    /// The value as `get` returns it.
    type Owned;
    /// redb's value type for the shape.
    type Redb: redb::Value + 'static;
    /// The PostgreSQL type of the value column `v`; `None`: the table has none.
    const COLUMN: Option<&'static str>;

    fn to_redb<'a>(v: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a>;
    fn from_redb<'a>(v: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a>;
    fn to_owned(v: Self::Ref<'_>) -> Self::Owned;
    fn param<'a>(v: Self::Ref<'a>) -> Option<Param<'a>>;
    /// The value of a PostgreSQL row, in its column `at`.
    fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<Self::Ref<'_>, MetaError>;
}

/// One bound parameter of a PostgreSQL statement.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
    Bytes(&'a [u8]),
}

/// A u64 as PostgreSQL's bigint. Every u64 the tables hold (milliseconds, sequence values,
/// event ids) is far below `i64::MAX`; a range bound beyond it (`..u64::MAX`) saturates, which
/// keeps its meaning.
pub fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn column<'r, T: tokio_postgres::types::FromSql<'r>>(row: &'r tokio_postgres::Row, at: usize) -> Result<T, MetaError> {
    row.try_get(at).map_err(|e| MetaError::Db(Box::new(e)))
}

fn uint(v: i64) -> Result<u64, MetaError> {
    u64::try_from(v).map_err(|_| MetaError::Corrupt(format!("negative integer {v} in a u64 column")))
}

/// The key shape of one string.
pub struct Str;
/// The key shape of two strings.
pub struct Str2;
/// The key shape of three strings.
pub struct Str3;
/// The key or value shape of one u64.
pub struct U64;
/// The key shape of a string and a u64.
pub struct StrU64;
/// The value shape of bytes.
pub struct Bytes;

impl Key for Str {
    type Ref<'a> = &'a str;
    type Redb = &'static str;
    const COLUMNS: &'static [&'static str] = &["text"];
    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        k
    }
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        k
    }
    fn params<'a>(k: &'a str, out: &mut Vec<Param<'a>>) {
        out.push(Param::Text(k));
    }
    fn from_row(row: &tokio_postgres::Row) -> Result<&str, MetaError> {
        column(row, 0)
    }
}

impl Key for Str2 {
    type Ref<'a> = (&'a str, &'a str);
    type Redb = (&'static str, &'static str);
    const COLUMNS: &'static [&'static str] = &["text", "text"];
    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        k
    }
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        k
    }
    fn params<'a>(k: (&'a str, &'a str), out: &mut Vec<Param<'a>>) {
        out.extend([Param::Text(k.0), Param::Text(k.1)]);
    }
    fn from_row(row: &tokio_postgres::Row) -> Result<(&str, &str), MetaError> {
        Ok((column(row, 0)?, column(row, 1)?))
    }
}

impl Key for Str3 {
    type Ref<'a> = (&'a str, &'a str, &'a str);
    type Redb = (&'static str, &'static str, &'static str);
    const COLUMNS: &'static [&'static str] = &["text", "text", "text"];
    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        k
    }
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        k
    }
    fn params<'a>(k: (&'a str, &'a str, &'a str), out: &mut Vec<Param<'a>>) {
        out.extend([Param::Text(k.0), Param::Text(k.1), Param::Text(k.2)]);
    }
    fn from_row(row: &tokio_postgres::Row) -> Result<(&str, &str, &str), MetaError> {
        Ok((column(row, 0)?, column(row, 1)?, column(row, 2)?))
    }
}

impl Key for U64 {
    type Ref<'a> = u64;
    type Redb = u64;
    const COLUMNS: &'static [&'static str] = &["bigint"];
    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        k
    }
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        k
    }
    fn params<'a>(k: u64, out: &mut Vec<Param<'a>>) {
        out.push(Param::Int(int(k)));
    }
    fn from_row(row: &tokio_postgres::Row) -> Result<u64, MetaError> {
        uint(column(row, 0)?)
    }
}

impl Key for StrU64 {
    type Ref<'a> = (&'a str, u64);
    type Redb = (&'static str, u64);
    const COLUMNS: &'static [&'static str] = &["text", "bigint"];
    fn to_redb<'a>(k: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        k
    }
    fn from_redb<'a>(k: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        k
    }
    fn params<'a>(k: (&'a str, u64), out: &mut Vec<Param<'a>>) {
        out.extend([Param::Text(k.0), Param::Int(int(k.1))]);
    }
    fn from_row(row: &tokio_postgres::Row) -> Result<(&str, u64), MetaError> {
        Ok((column(row, 0)?, uint(column(row, 1)?)?))
    }
}

impl Value for Bytes {
    type Ref<'a> = &'a [u8];
    type Owned = Vec<u8>;
    type Redb = &'static [u8];
    const COLUMN: Option<&'static str> = Some("bytea");
    fn to_redb<'a>(v: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        v
    }
    fn from_redb<'a>(v: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        v
    }
    fn to_owned(v: &[u8]) -> Vec<u8> {
        v.to_vec()
    }
    fn param<'a>(v: Self::Ref<'a>) -> Option<Param<'a>> {
        Some(Param::Bytes(v))
    }
    fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<&[u8], MetaError> {
        column(row, at)
    }
}

impl Value for () {
    type Ref<'a> = ();
    type Owned = ();
    type Redb = ();
    const COLUMN: Option<&'static str> = None;
    fn to_redb<'a>((): Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {}
    fn from_redb<'a>((): <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {}
    fn to_owned((): ()) {}
    fn param<'a>((): Self::Ref<'a>) -> Option<Param<'a>> {
        None
    }
    fn from_row(_: &tokio_postgres::Row, _: usize) -> Result<(), MetaError> {
        Ok(())
    }
}

impl Value for U64 {
    type Ref<'a> = u64;
    type Owned = u64;
    type Redb = u64;
    const COLUMN: Option<&'static str> = Some("bigint");
    fn to_redb<'a>(v: Self::Ref<'a>) -> <Self::Redb as redb::Value>::SelfType<'a> {
        v
    }
    fn from_redb<'a>(v: <Self::Redb as redb::Value>::SelfType<'a>) -> Self::Ref<'a> {
        v
    }
    fn to_owned(v: u64) -> u64 {
        v
    }
    fn param<'a>(v: Self::Ref<'a>) -> Option<Param<'a>> {
        Some(Param::Int(int(v)))
    }
    fn from_row(row: &tokio_postgres::Row, at: usize) -> Result<u64, MetaError> {
        uint(column(row, at)?)
    }
}

/// A table: its name, key shape and value shape.
pub struct Table<K: Key, V: Value> {
    pub name: &'static str,
    shape: PhantomData<(K, V)>,
}

impl<K: Key, V: Value> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            shape: PhantomData,
        }
    }

    /// The table in redb.
    pub const fn redb(&self) -> TableDefinition<'static, K::Redb, V::Redb> {
        TableDefinition::new(self.name)
    }
}

/// Reads, in one snapshot.
pub trait Rows {
    /// The value of `key`, if there is a row.
    fn get<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<Option<V::Owned>, MetaError>;

    /// Whether `key` has a row.
    fn contains<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<bool, MetaError> {
        Ok(self.get(table, key)?.is_some())
    }

    /// Hand each row of `range` to `visit`, in key order (`Dir::Back`: reversed), until it
    /// answers `Break`.
    fn visit<'k, K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        range: impl RangeBounds<K::Ref<'k>>,
        dir: Dir,
        visit: &mut Visit<'_, K, V>,
    ) -> Result<(), MetaError>;

    /// How many rows `table` holds.
    fn len<K: Key, V: Value>(&self, table: &Table<K, V>) -> Result<u64, MetaError>;

    /// `visit` forward.
    fn scan<'k, K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        range: impl RangeBounds<K::Ref<'k>>,
        visit: &mut Visit<'_, K, V>,
    ) -> Result<(), MetaError> {
        self.visit(table, range, Dir::Forward, visit)
    }
}

/// Writes, in the transaction's snapshot, visible to its later reads.
pub trait WriteRows: Rows {
    /// Insert or replace the row of `key`.
    fn insert<K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Ref<'_>,
        value: V::Ref<'_>,
    ) -> Result<(), MetaError>;

    /// Remove the row of `key`, answering its value if there was one.
    fn take<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<Option<V::Owned>, MetaError>;

    /// Remove the row of `key`; answers whether there was one.
    fn remove<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<bool, MetaError> {
        Ok(self.take(table, key)?.is_some())
    }
}

/// redb's borrowed form of a key shape.
type RedbKey<'k, K> = <<K as Key>::Redb as redb::Value>::SelfType<'k>;

/// One entry of a redb range.
type RedbEntry<'r, K, V> = Result<
    (
        redb::AccessGuard<'r, <K as Key>::Redb>,
        redb::AccessGuard<'r, <V as Value>::Redb>,
    ),
    redb::StorageError,
>;

/// A range of borrowed keys as redb's range of its key type.
fn redb_range<'k, K: Key>(range: &impl RangeBounds<K::Ref<'k>>) -> (Bound<RedbKey<'k, K>>, Bound<RedbKey<'k, K>>) {
    let map = |b: Bound<&K::Ref<'k>>| match b {
        Bound::Included(k) => Bound::Included(K::to_redb(*k)),
        Bound::Excluded(k) => Bound::Excluded(K::to_redb(*k)),
        Bound::Unbounded => Bound::Unbounded,
    };
    (map(range.start_bound()), map(range.end_bound()))
}

/// Walk a redb range in `dir`, handing each row to `visit`.
fn drive<K: Key, V: Value>(
    range: redb::Range<'_, K::Redb, V::Redb>,
    dir: Dir,
    visit: &mut Visit<'_, K, V>,
) -> Result<(), MetaError> {
    let mut step = |entry: RedbEntry<'_, K, V>| {
        let (k, v) = entry?;
        visit(K::from_redb(k.value()), V::from_redb(v.value()))
    };
    match dir {
        Dir::Forward => {
            for entry in range {
                if step(entry)?.is_break() {
                    break;
                }
            }
        }
        Dir::Back => {
            for entry in range.rev() {
                if step(entry)?.is_break() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// The reads of a redb transaction, the same for both kinds.
macro_rules! redb_rows {
    ($txn:ty) => {
        impl Rows for $txn {
            fn get<K: Key, V: Value>(
                &self,
                table: &Table<K, V>,
                key: K::Ref<'_>,
            ) -> Result<Option<V::Owned>, MetaError> {
                let t = self.open_table(table.redb())?;
                let row = t.get(K::to_redb(key))?;
                Ok(row.map(|v| V::to_owned(V::from_redb(v.value()))))
            }

            fn contains<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<bool, MetaError> {
                Ok(self.open_table(table.redb())?.get(K::to_redb(key))?.is_some())
            }

            fn visit<'k, K: Key, V: Value>(
                &self,
                table: &Table<K, V>,
                range: impl RangeBounds<K::Ref<'k>>,
                dir: Dir,
                visit: &mut Visit<'_, K, V>,
            ) -> Result<(), MetaError> {
                let t = self.open_table(table.redb())?;
                let range = t.range(redb_range::<K>(&range))?;
                drive::<K, V>(range, dir, visit)
            }

            fn len<K: Key, V: Value>(&self, table: &Table<K, V>) -> Result<u64, MetaError> {
                Ok(self.open_table(table.redb())?.len()?)
            }
        }
    };
}

redb_rows!(redb::ReadTransaction);
redb_rows!(redb::WriteTransaction);

impl WriteRows for redb::WriteTransaction {
    fn insert<K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Ref<'_>,
        value: V::Ref<'_>,
    ) -> Result<(), MetaError> {
        self.open_table(table.redb())?
            .insert(K::to_redb(key), V::to_redb(value))?;
        Ok(())
    }

    fn take<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<Option<V::Owned>, MetaError> {
        let mut t = self.open_table(table.redb())?;
        let old = t.remove(K::to_redb(key))?;
        Ok(old.map(|v| V::to_owned(V::from_redb(v.value()))))
    }
}
