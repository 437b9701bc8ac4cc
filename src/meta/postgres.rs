//! PostgreSQL's engine: the metadata in a database shared by every node, for several Berth
//! nodes over one bucket (`metadata.postgres.url`).
//!
//! **Schema.** It mirrors redb's tables (`schema::ALL`), in the schema `berth`: one table per
//! redb table, with the key as columns `k1`, `k2`, ... (`text COLLATE "C"`, so that they sort
//! byte-wise as redb's keys do, or `bigint`) under a primary key, and the value, when the table
//! has one, as `v` (the same `codec` bytes redb stores, or a `bigint`). Versioned migrations
//! (`MIGRATIONS`) run at open time, one transaction each, under an advisory lock, so that
//! nodes starting together neither race nor apply one twice; `berth.schema_version` says which
//! have run, and a database newer than this binary is refused.
//!
//! **Transactions.** The bodies are the backend-neutral ones (`rows`): each get, insert,
//! remove or batch of a scan is one statement, prepared once per connection. Each body runs
//! on a blocking thread of this engine's own runtime with one pooled connection (`run`):
//! - reads in one `REPEATABLE READ, READ ONLY` transaction: one snapshot, like redb's;
//! - writes at `SERIALIZABLE`. The bodies were written for redb's single writer, where every
//!   write transaction runs alone; serializable snapshot isolation makes concurrent ones
//!   behave as if they ran one at a time, or fails one of them with a serialization failure,
//!   which reruns its body in a fresh transaction (bodies are rerunnable: `rows`). So every
//!   invariant of docs/design.md that rests on "re-checked inside the transaction" holds on
//!   several nodes without row locks picked by hand, and a lock forgotten cannot break one.
//!
//! The `BEGIN` is sent with the body's first statement, pipelined, so a point read costs two
//! round trips (that, and `COMMIT`).

use std::cell::Cell;
use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Row};

use super::engine::Engine;
use super::rows::{Dir, Key, Param, Rows, Table, Value, Visit, WriteRows};
use super::shared_locks::SharedLocks;
use super::{AuditHook, MetaError, PendingWrite, WriteOp};

/// Serialization failures a write retries before giving up with the error.
const MAX_RETRIES: u32 = 32;

/// The advisory lock migrations run under (the bytes of "berth").
const MIGRATION_LOCK: i64 = 0x62_65_72_74_68;

/// Rows a scan fetches first, and then per batch: most scans stop early (a prefix ends).
const FIRST_BATCH: usize = 64;
const BATCH: usize = 1024;

const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL SERIALIZABLE";

/// PostgreSQL's engine of `MetaStore`.
pub struct PgMeta {
    shared: Arc<Shared>,
    /// The locks and touches of the nodes (`cluster`), on a pool of their own.
    locks: Arc<SharedLocks>,
    /// The runtime the connections and the bodies run on; shut down without waiting on drop.
    runtime: Option<Runtime>,
}

/// What a running body needs: the pool, and the runtime to block on.
pub(super) struct Shared {
    pub(super) pool: Pool,
    pub(super) handle: Handle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PgMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMeta").finish_non_exhaustive()
    }
}

impl Drop for PgMeta {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Timeouts that turn a database cut off without a word (a partition, a host gone) into a
/// connection error, hence a 503, within seconds rather than after TCP's retransmissions
/// (about 15 minutes): unless the URL sets them, a connection attempt gives up after
/// `CONNECT_TIMEOUT`, and data left unacknowledged by the server for `TCP_USER_TIMEOUT` closes
/// the connection. A statement that merely runs long is not affected.
fn fail_fast(config: &mut tokio_postgres::Config) {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure of the database, as a `MetaError`: `Unavailable` when the connection itself failed
/// (`connection_lost`), so that the API answers 503 rather than 500.
pub(super) fn db(e: impl StdError + Send + Sync + 'static) -> MetaError {
    let e: Box<dyn StdError + Send + Sync> = Box::new(e);
    if connection_lost(&*e) {
        MetaError::Unavailable(e.to_string())
    } else {
        MetaError::Db(e)
    }
}

/// Whether `e` says the database cannot be reached, rather than that a statement failed: the
/// pool timed out or is closed, or the driver's error carries no SQLSTATE (connection refused,
/// closed, an I/O error) or one of class 08 (connection exception) or 57P (the server is
/// shutting down, or cannot accept connections yet). Their texts name no host and no
/// password: the driver's errors never quote the connection URL.
fn connection_lost(e: &(dyn StdError + 'static)) -> bool {
    if let Some(pg) = e.downcast_ref::<tokio_postgres::Error>() {
        return pg
            .code()
            .is_none_or(|c| c.code().starts_with("08") || c.code().starts_with("57P"));
    }
    match e.downcast_ref::<deadpool_postgres::PoolError>() {
        Some(deadpool_postgres::PoolError::Timeout(_) | deadpool_postgres::PoolError::Closed) => true,
        Some(deadpool_postgres::PoolError::Backend(pg)) => connection_lost(pg),
        _ => false,
    }
}

impl PgMeta {
    /// Connect to `url` with at most `connections` pooled connections for the metadata and as
    /// many for the cluster's locks (`cluster`), and bring the schema
    /// up to date. Blocks: call it from blocking code.
    pub fn open(url: &str, connections: usize) -> Result<Self, MetaError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| MetaError::Db(Box::new(e)))?;
        fail_fast(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(connections + 4)
            .thread_name("berth-postgres")
            .enable_all()
            .build()
            .map_err(db)?;
        // `Fast` recycling checks that a connection is not closed before handing it out. A
        // server that shuts down or restarts tells each connection (57P01) and closes it, so
        // its connection task marks it closed at once and the pool drops it; a connection cut
        // silently fails its next statement, and a transaction whose statement failed takes
        // its connection out of the pool (`PgTxn::end`). So no dead connection is handed out
        // twice, and `Verified` would only add a round trip to every checkout (`new_pool`).
        let pool = new_pool(config.clone(), connections, Some(Duration::from_secs(30)))?;
        // A lock waits as long as its holder holds it: no wait limit on the lock pool.
        let locks = new_pool(config, connections, None)?;
        let shared = Arc::new(Shared {
            pool,
            handle: runtime.handle().clone(),
        });
        let meta = PgMeta {
            shared,
            locks: Arc::new(SharedLocks::new(locks, runtime.handle().clone())),
            runtime: Some(runtime),
        };
        let shared = Arc::clone(&meta.shared);
        meta.blocking(async move { migrate(&shared.pool).await })?;
        Ok(meta)
    }

    /// Run `fut` on this engine's runtime and block the calling thread until it is done.
    fn blocking<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.shared.handle.spawn(async move { drop(tx.send(fut.await)) });
        rx.recv().expect("the PostgreSQL runtime stopped")
    }

    async fn read<T, F>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(&PgTxn) -> Result<T, MetaError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let handle = self.shared.handle.clone();
        handle
            .spawn_blocking(move || shared.read(f))
            .await
            .expect("a metadata read panicked")
    }
}

/// A pool of at most `size` connections to `config`, waiting at most `wait` for one.
fn new_pool(config: tokio_postgres::Config, size: usize, wait: Option<Duration>) -> Result<Pool, MetaError> {
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(10)))
        .wait_timeout(wait)
        .build()
        .map_err(db)
}

impl Engine for PgMeta {
    type Read = PgTxn;
    type Write = PgTxn;

    fn shared_locks(&self) -> Option<Arc<SharedLocks>> {
        Some(Arc::clone(&self.locks))
    }

    fn cluster(&self) -> Option<Arc<dyn super::cluster::Cluster>> {
        Some(Arc::new(super::pg_cluster::PgCluster {
            shared: Arc::clone(&self.shared),
        }))
    }

    fn point<T, F>(&self, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&PgTxn) -> Result<T, MetaError> + Send + 'static,
    {
        self.read(f)
    }

    fn scan<T, F>(&self, f: F) -> impl Future<Output = Result<T, MetaError>> + Send
    where
        T: Send + 'static,
        F: FnOnce(&PgTxn) -> Result<T, MetaError> + Send + 'static,
    {
        self.read(f)
    }

    fn write<T, F>(&self, f: F) -> WriteOp<T>
    where
        T: Send + 'static,
        F: FnMut(&PgTxn) -> Result<T, MetaError> + Send + 'static,
    {
        WriteOp::new(PgWrite {
            shared: Arc::clone(&self.shared),
            f,
            audit: None,
        })
    }
}

impl Shared {
    /// `f` over one read-only snapshot.
    fn read<T>(&self, f: impl FnOnce(&PgTxn) -> Result<T, MetaError>) -> Result<T, MetaError> {
        let txn = PgTxn::new(self.connect()?, self.handle.clone(), BEGIN_READ);
        let result = f(&txn);
        txn.end(result.is_ok())?;
        result
    }

    /// `f` as a serializable write, rerun on serialization failures.
    fn write<T>(
        &self,
        f: &mut impl FnMut(&PgTxn) -> Result<T, MetaError>,
        audit: &mut Option<AuditHook<T>>,
    ) -> Result<T, MetaError> {
        let mut attempt = 0;
        loop {
            let txn = PgTxn::new(self.connect()?, self.handle.clone(), BEGIN_WRITE);
            let result = f(&txn).and_then(|value| {
                if let Some(hook) = audit
                    && let Some(audited) = hook(&value)
                {
                    super::audit::append(&txn, &audited)?;
                }
                Ok(value)
            });
            let ended = txn.end(result.is_ok());
            let outcome = ended.and(result);
            match outcome {
                Err(e) if retryable(&e) && attempt < MAX_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(backoff(attempt));
                }
                other => return other,
            }
        }
    }

    fn connect(&self) -> Result<Object, MetaError> {
        self.handle.block_on(self.pool.get()).map_err(db)
    }
}

/// A short, growing, jittered pause before a retry, so that two writers that conflicted do not
/// meet again at once.
fn backoff(attempt: u32) -> Duration {
    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) % 4;
    Duration::from_millis(u64::from(attempt.min(10)) + jitter)
}

/// Whether `e` is a serialization failure or a deadlock: the transaction may simply run again.
fn retryable(e: &MetaError) -> bool {
    let MetaError::Db(source) = e else {
        return false;
    };
    source
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED)
}

/// A write in waiting (`PendingWrite`).
struct PgWrite<T, F> {
    shared: Arc<Shared>,
    f: F,
    audit: Option<AuditHook<T>>,
}

#[async_trait::async_trait]
impl<T, F> PendingWrite<T> for PgWrite<T, F>
where
    T: Send + 'static,
    F: FnMut(&PgTxn) -> Result<T, MetaError> + Send + 'static,
{
    fn wait(self: Box<Self>) -> Result<T, MetaError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let handle = self.shared.handle.clone();
        handle.spawn_blocking(move || {
            let mut op = *self;
            drop(tx.send(op.shared.write(&mut op.f, &mut op.audit)));
        });
        rx.recv()
            .map_err(|_| MetaError::Commit("the metadata write panicked".into()))?
    }

    async fn commit(self: Box<Self>) -> Result<T, MetaError> {
        let handle = self.shared.handle.clone();
        handle
            .spawn_blocking(move || {
                let mut op = *self;
                op.shared.write(&mut op.f, &mut op.audit)
            })
            .await
            .expect("a metadata write panicked")
    }

    fn audit(&mut self, hook: AuditHook<T>) {
        self.audit = Some(hook);
    }
}

/// One transaction on one pooled connection, begun with its first statement.
pub struct PgTxn {
    /// `None` once ended; a transaction dropped before it ended (a panicking body) takes its
    /// connection out of the pool rather than hand it on mid-transaction.
    client: Option<Object>,
    handle: Handle,
    begin: &'static str,
    begun: Cell<bool>,
}

impl Drop for PgTxn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.begun.get()
        {
            drop(Object::take(client));
        }
    }
}

impl PgTxn {
    fn new(client: Object, handle: Handle, begin: &'static str) -> Self {
        PgTxn {
            client: Some(client),
            handle,
            begin,
            begun: Cell::new(false),
        }
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("a transaction is used only until it ends")
    }

    /// Commit (or roll back) what the body did, and hand the connection back to the pool.
    fn end(mut self, commit: bool) -> Result<(), MetaError> {
        let client = self.client.take().expect("a transaction ends once");
        if !self.begun.get() {
            return Ok(());
        }
        let sql = if commit { "COMMIT" } else { "ROLLBACK" };
        match self.handle.block_on(client.batch_execute(sql)) {
            Ok(()) => Ok(()),
            Err(e) => {
                drop(Object::take(client));
                Err(db(e))
            }
        }
    }

    /// Run one statement, beginning the transaction with it if it is the first.
    fn query(&self, sql: &str, args: &[Arg]) -> Result<Vec<Row>, MetaError> {
        let client = self.client();
        let statement = self.handle.block_on(client.prepare_cached(sql)).map_err(db)?;
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
        if self.begun.replace(true) {
            return self.handle.block_on(client.query(&statement, &params)).map_err(db);
        }
        let (begun, rows) = self
            .handle
            .block_on(async { tokio::join!(client.batch_execute(self.begin), client.query(&statement, &params)) });
        begun.map_err(db)?;
        rows.map_err(db)
    }
}

/// A statement parameter, owned.
#[derive(Debug, Clone)]
enum Arg {
    Text(String),
    Int(i64),
    Bytes(Vec<u8>),
}

impl From<Param<'_>> for Arg {
    fn from(p: Param<'_>) -> Self {
        match p {
            Param::Text(s) => Arg::Text(s.to_owned()),
            Param::Int(i) => Arg::Int(i),
            Param::Bytes(b) => Arg::Bytes(b.to_vec()),
        }
    }
}

impl ToSql for Arg {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Arg::Text(s) => s.to_sql(ty, out),
            Arg::Int(i) => i.to_sql(ty, out),
            Arg::Bytes(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <String as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty) || <Vec<u8> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

fn key_args<K: Key>(key: K::Ref<'_>) -> Vec<Arg> {
    let mut params = Vec::with_capacity(K::COLUMNS.len());
    K::params(key, &mut params);
    params.into_iter().map(Arg::from).collect()
}

/// `k1, k2, ...` of a key shape.
fn key_columns<K: Key>() -> String {
    (1..=K::COLUMNS.len())
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `k1 = $1 AND k2 = $2 ...`.
fn key_matches<K: Key>() -> String {
    (1..=K::COLUMNS.len())
        .map(|i| format!("k{i} = ${i}"))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// What a statement selects or returns as the value: `v`, or a constant for a table without.
fn value_column<V: Value>() -> &'static str {
    if V::COLUMN.is_some() { "v" } else { "1" }
}

impl Rows for PgTxn {
    fn get<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<Option<V::Owned>, MetaError> {
        let sql = format!(
            "SELECT {} FROM berth.{} WHERE {}",
            value_column::<V>(),
            table.name,
            key_matches::<K>()
        );
        let rows = self.query(&sql, &key_args::<K>(key))?;
        rows.first().map(|row| V::from_row(row, 0).map(V::to_owned)).transpose()
    }

    fn visit<'k, K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        range: impl RangeBounds<K::Ref<'k>>,
        dir: Dir,
        visit: &mut Visit<'_, K, V>,
    ) -> Result<(), MetaError> {
        let owned = |b: Bound<&K::Ref<'k>>| match b {
            Bound::Included(k) => Bound::Included(key_args::<K>(*k)),
            Bound::Excluded(k) => Bound::Excluded(key_args::<K>(*k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (mut from, mut to) = (owned(range.start_bound()), owned(range.end_bound()));
        let mut limit = FIRST_BATCH;
        loop {
            let (sql, args) = scan_statement::<K, V>(table.name, &from, &to, dir, limit);
            let rows = self.query(&sql, &args)?;
            for row in &rows {
                if visit(K::from_row(row)?, V::from_row(row, K::COLUMNS.len())?)?.is_break() {
                    return Ok(());
                }
            }
            let Some(last) = rows.last().filter(|_| rows.len() == limit) else {
                return Ok(());
            };
            let after = Bound::Excluded(key_args::<K>(K::from_row(last)?));
            match dir {
                Dir::Forward => from = after,
                Dir::Back => to = after,
            }
            limit = BATCH;
        }
    }

    fn len<K: Key, V: Value>(&self, table: &Table<K, V>) -> Result<u64, MetaError> {
        let rows = self.query(&format!("SELECT count(*) FROM berth.{}", table.name), &[])?;
        let n: i64 = rows.first().map(|r| r.try_get(0)).transpose().map_err(db)?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// One batch of a scan: rows between the bounds, in key order (`Dir::Back`: reversed), at most
/// `limit`. Tuple bounds are row comparisons, which the primary key's index serves.
fn scan_statement<K: Key, V: Value>(
    table: &str,
    from: &Bound<Vec<Arg>>,
    to: &Bound<Vec<Arg>>,
    dir: Dir,
    limit: usize,
) -> (String, Vec<Arg>) {
    let columns = key_columns::<K>();
    let mut args = Vec::new();
    let mut conditions = Vec::new();
    for (bound, inclusive, exclusive) in [(from, ">=", ">"), (to, "<=", "<")] {
        let (op, key) = match bound {
            Bound::Included(k) => (inclusive, k),
            Bound::Excluded(k) => (exclusive, k),
            Bound::Unbounded => continue,
        };
        let placeholders: Vec<String> = (1..=key.len()).map(|i| format!("${}", args.len() + i)).collect();
        conditions.push(format!("({columns}) {op} ({})", placeholders.join(", ")));
        args.extend(key.iter().cloned());
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let order = match dir {
        Dir::Forward => columns.clone(),
        Dir::Back => columns.replace(',', " DESC,") + " DESC",
    };
    let value = if V::COLUMN.is_some() { ", v" } else { "" };
    let sql = format!("SELECT {columns}{value} FROM berth.{table}{filter} ORDER BY {order} LIMIT {limit}");
    (sql, args)
}

impl WriteRows for PgTxn {
    fn insert<K: Key, V: Value>(
        &self,
        table: &Table<K, V>,
        key: K::Ref<'_>,
        value: V::Ref<'_>,
    ) -> Result<(), MetaError> {
        let columns = key_columns::<K>();
        let n = K::COLUMNS.len();
        let keys: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let mut args = key_args::<K>(key);
        let sql = match V::param(value) {
            Some(v) => {
                args.push(v.into());
                format!(
                    "INSERT INTO berth.{} ({columns}, v) VALUES ({}, ${}) ON CONFLICT ({columns}) DO UPDATE SET v = EXCLUDED.v",
                    table.name,
                    keys.join(", "),
                    n + 1
                )
            }
            None => format!(
                "INSERT INTO berth.{} ({columns}) VALUES ({}) ON CONFLICT DO NOTHING",
                table.name,
                keys.join(", ")
            ),
        };
        self.query(&sql, &args)?;
        Ok(())
    }

    fn take<K: Key, V: Value>(&self, table: &Table<K, V>, key: K::Ref<'_>) -> Result<Option<V::Owned>, MetaError> {
        let sql = format!(
            "DELETE FROM berth.{} WHERE {} RETURNING {}",
            table.name,
            key_matches::<K>(),
            value_column::<V>()
        );
        let rows = self.query(&sql, &key_args::<K>(key))?;
        rows.first().map(|row| V::from_row(row, 0).map(V::to_owned)).transpose()
    }
}

/// The schema's versions: migration `i` brings the database from version `i` to `i + 1`.
const MIGRATIONS: &[fn() -> String] = &[tables_v1, cluster_v2, cluster_v3];

/// Version 1: the schema, and one table per redb table.
fn tables_v1() -> String {
    let mut sql = String::from("CREATE SCHEMA IF NOT EXISTS berth;\n");
    for (name, keys, value) in super::schema::ALL {
        let mut columns: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, ty)| {
                let collate = if *ty == "text" { " COLLATE \"C\"" } else { "" };
                format!("k{} {ty}{collate} NOT NULL", i + 1)
            })
            .collect();
        if let Some(ty) = value {
            columns.push(format!("v {ty} NOT NULL"));
        }
        let primary: Vec<String> = (1..=keys.len()).map(|i| format!("k{i}")).collect();
        let _ = writeln!(
            sql,
            "CREATE TABLE berth.{name} ({}, PRIMARY KEY ({}));",
            columns.join(", "),
            primary.join(", ")
        );
    }
    sql
}

/// Version 2: what several nodes share beyond redb's tables. `touches`: when a blob was last
/// HEAD-checked (garbage collection spares it within the grace period, whichever node answered
/// the HEAD). `leases`: a named job (`gc`) that one node runs at a time, until `expires_ms`
/// unless renewed. `jobs`: each job's last reported status, readable from any node.
fn cluster_v2() -> String {
    "CREATE TABLE berth.touches (digest text COLLATE \"C\" PRIMARY KEY, at_ms bigint NOT NULL);
     CREATE TABLE berth.leases (name text COLLATE \"C\" PRIMARY KEY, holder text NOT NULL, job text NOT NULL,
                                expires_ms bigint NOT NULL);
     CREATE TABLE berth.jobs (id text COLLATE \"C\" PRIMARY KEY, kind text NOT NULL, node text NOT NULL,
                              status text NOT NULL, updated_ms bigint NOT NULL);"
        .to_owned()
}

/// Version 3: `secrets`, what every node must agree on and none may make up alone (the key
/// that signs the web UI's session cookies, so that a session opened on one node is valid on
/// the others); `pulls`, when each manifest of a pull-through cache was last pulled through
/// any node (what eviction orders images by).
fn cluster_v3() -> String {
    "CREATE TABLE berth.secrets (name text COLLATE \"C\" PRIMARY KEY, value bytea NOT NULL);
     CREATE TABLE berth.pulls (repo text COLLATE \"C\" NOT NULL, digest text COLLATE \"C\" NOT NULL,
                               at_ms bigint NOT NULL, PRIMARY KEY (repo, digest));"
        .to_owned()
}

/// Bring the schema up to date, one migration per transaction, under the advisory lock.
async fn migrate(pool: &Pool) -> Result<(), MetaError> {
    let client = pool.get().await.map_err(db)?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    let result = apply_migrations(&client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result?;
    unlocked.map_err(db)?;
    Ok(())
}

async fn apply_migrations(client: &Object) -> Result<(), MetaError> {
    client
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS berth;
             CREATE TABLE IF NOT EXISTS berth.schema_version (version integer NOT NULL)",
        )
        .await
        .map_err(db)?;
    let row = client
        .query_opt("SELECT version FROM berth.schema_version", &[])
        .await
        .map_err(db)?;
    let version: i32 = row.map(|r| r.try_get(0)).transpose().map_err(db)?.unwrap_or(0);
    let known = MIGRATIONS.len();
    let current = usize::try_from(version).unwrap_or(usize::MAX);
    if current > known {
        return Err(MetaError::Corrupt(format!(
            "the PostgreSQL schema is at version {version}, newer than this berth knows ({known}); run a newer berth"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let next = i32::try_from(i + 1).expect("few migrations");
        let sql = format!(
            "BEGIN;\n{}\nDELETE FROM berth.schema_version;\nINSERT INTO berth.schema_version VALUES ({next});\nCOMMIT;",
            migration()
        );
        if let Err(e) = client.batch_execute(&sql).await {
            drop(client.batch_execute("ROLLBACK").await);
            return Err(db(e));
        }
    }
    Ok(())
}
