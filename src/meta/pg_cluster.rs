//! PostgreSQL's [`Cluster`]: leases in `berth.leases`, job statuses in `berth.jobs`, blob
//! touches in `berth.touches`, cache pulls in `berth.pulls`, shared secrets in `berth.secrets` (schema versions 2 and 3, `postgres`). Each call is one
//! autocommit statement on a pooled connection, run on the engine's runtime; times are the
//! database's clock (`NOW_MS`), so the nodes' clocks never decide who holds a lease.
//!
//! A claim is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE`: of two nodes claiming a free
//! or expired lease at once, the second waits on the first's row lock and then sees the lease
//! taken (READ COMMITTED re-checks the `WHERE` on the newest row), so exactly one wins.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;

use super::MetaError;
use super::cluster::{Claim, Cluster, JobRecord};
use super::postgres::{Shared, db};
use super::schema::Millis;

/// Milliseconds since the epoch, by the database's clock.
macro_rules! now_ms {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    };
}

const CLAIM: &str = concat!(
    "INSERT INTO berth.leases AS l (name, holder, job, expires_ms) VALUES ($1, $2, $3, ",
    now_ms!(),
    " + $4) ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, job = EXCLUDED.job, \
     expires_ms = EXCLUDED.expires_ms WHERE l.expires_ms < ",
    now_ms!(),
    " OR (l.holder = EXCLUDED.holder AND l.job = EXCLUDED.job) RETURNING 1"
);
const HOLDER: &str = "SELECT holder, job FROM berth.leases WHERE name = $1";
const RENEW: &str = concat!(
    "UPDATE berth.leases SET expires_ms = ",
    now_ms!(),
    " + $4 WHERE name = $1 AND holder = $2 AND job = $3"
);
const RELEASE: &str = "DELETE FROM berth.leases WHERE name = $1 AND holder = $2 AND job = $3";
const PUT_JOB: &str = concat!(
    "INSERT INTO berth.jobs (id, kind, node, status, updated_ms) VALUES ($1, $2, $3, $4, ",
    now_ms!(),
    ") ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, updated_ms = EXCLUDED.updated_ms"
);
const JOB: &str = concat!(
    "SELECT id, kind, node, status, ",
    now_ms!(),
    " - updated_ms FROM berth.jobs WHERE kind = $1 AND id = $2"
);
/// Newest first by start (`started_at` is RFC 3339 in UTC, which sorts as text).
const JOBS: &str = concat!(
    "SELECT id, kind, node, status, ",
    now_ms!(),
    " - updated_ms FROM berth.jobs WHERE kind = $1 \
     ORDER BY (status::jsonb ->> 'started_at') DESC, id LIMIT $2"
);
const PRUNE_JOBS: &str = "DELETE FROM berth.jobs WHERE kind = $1 AND id NOT IN \
     (SELECT id FROM berth.jobs WHERE kind = $1 ORDER BY (status::jsonb ->> 'started_at') DESC, id LIMIT $2)";
const RECORD_PULL: &str = "INSERT INTO berth.pulls AS p (repo, digest, at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (repo, digest) DO UPDATE SET at_ms = GREATEST(p.at_ms, EXCLUDED.at_ms)";
const PULLS: &str = "SELECT repo, digest, at_ms FROM berth.pulls";
const FORGET_PULL: &str = "DELETE FROM berth.pulls WHERE repo = $1 AND digest = $2";
const PUT_SECRET: &str = "INSERT INTO berth.secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
const SECRET: &str = "SELECT value FROM berth.secrets WHERE name = $1";

/// Claims retried when the holder released between our claim and our look at it.
const CLAIM_TRIES: usize = 3;

/// PostgreSQL's cluster coordination, over the engine's pool.
#[derive(Debug)]
pub struct PgCluster {
    pub(super) shared: Arc<Shared>,
}

fn millis(at: Millis) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgCluster {
    /// Run `f` with a pooled connection on the engine's runtime.
    async fn with<T, F, Fut>(&self, f: F) -> Result<T, MetaError>
    where
        T: Send + 'static,
        F: FnOnce(Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let shared = Arc::clone(&self.shared);
        self.shared
            .handle
            .spawn(async move {
                let client = shared.pool.get().await.map_err(db)?;
                f(client).await.map_err(db)
            })
            .await
            .expect("a cluster statement panicked")
    }
}

fn record(row: &tokio_postgres::Row) -> Result<JobRecord, tokio_postgres::Error> {
    let age: i64 = row.try_get(4)?;
    Ok(JobRecord {
        id: row.try_get(0)?,
        kind: row.try_get(1)?,
        node: row.try_get(2)?,
        status: row.try_get(3)?,
        age_ms: u64::try_from(age).unwrap_or(0),
    })
}

#[async_trait::async_trait]
impl Cluster for PgCluster {
    async fn ping(&self, timeout: Duration) -> Result<(), MetaError> {
        let probe = self.with(|client| async move { client.simple_query("SELECT 1").await.map(drop) });
        tokio::time::timeout(timeout, probe)
            .await
            .unwrap_or_else(|_| Err(MetaError::Unavailable(format!("no answer within {timeout:?}"))))
    }

    async fn claim(&self, name: &str, holder: &str, job: &str, ttl: Duration) -> Result<Claim, MetaError> {
        let (name, holder, job) = (name.to_owned(), holder.to_owned(), job.to_owned());
        self.with(move |client| async move {
            for _ in 0..CLAIM_TRIES {
                if !client.query(CLAIM, &[&name, &holder, &job, &ms(ttl)]).await?.is_empty() {
                    return Ok(Claim::Won);
                }
                if let Some(row) = client.query_opt(HOLDER, &[&name]).await? {
                    return Ok(Claim::Held {
                        holder: row.try_get(0)?,
                        job: row.try_get(1)?,
                    });
                }
            }
            Ok(Claim::Held {
                holder: String::new(),
                job: String::new(),
            })
        })
        .await
    }

    async fn renew(&self, name: &str, holder: &str, job: &str, ttl: Duration) -> Result<bool, MetaError> {
        let (name, holder, job) = (name.to_owned(), holder.to_owned(), job.to_owned());
        self.with(move |client| async move { Ok(client.execute(RENEW, &[&name, &holder, &job, &ms(ttl)]).await? == 1) })
            .await
    }

    async fn release(&self, name: &str, holder: &str, job: &str) -> Result<(), MetaError> {
        let (name, holder, job) = (name.to_owned(), holder.to_owned(), job.to_owned());
        self.with(move |client| async move { client.execute(RELEASE, &[&name, &holder, &job]).await.map(drop) })
            .await
    }

    async fn put_job(&self, job: &JobRecord) -> Result<(), MetaError> {
        let job = job.clone();
        self.with(move |client| async move {
            let args: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&job.id, &job.kind, &job.node, &job.status];
            client.execute(PUT_JOB, &args).await.map(drop)
        })
        .await
    }

    async fn job(&self, kind: &str, id: &str) -> Result<Option<JobRecord>, MetaError> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        self.with(move |client| async move {
            client
                .query_opt(JOB, &[&kind, &id])
                .await?
                .as_ref()
                .map(record)
                .transpose()
        })
        .await
    }

    async fn jobs(&self, kind: &str, limit: usize) -> Result<Vec<JobRecord>, MetaError> {
        let kind = kind.to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |client| async move {
            client.execute(PRUNE_JOBS, &[&kind, &limit]).await?;
            client.query(JOBS, &[&kind, &limit]).await?.iter().map(record).collect()
        })
        .await
    }

    async fn record_pull(&self, repo: &str, digest: &str, at_ms: Millis) -> Result<(), MetaError> {
        let (repo, digest, at) = (repo.to_owned(), digest.to_owned(), millis(at_ms));
        self.with(move |client| async move { client.execute(RECORD_PULL, &[&repo, &digest, &at]).await.map(drop) })
            .await
    }

    async fn pulls(&self) -> Result<Vec<((String, String), Millis)>, MetaError> {
        self.with(move |client| async move {
            let rows = client.query(PULLS, &[]).await?;
            let pull = |r: &tokio_postgres::Row| -> Result<_, tokio_postgres::Error> {
                let at: i64 = r.try_get(2)?;
                Ok(((r.try_get(0)?, r.try_get(1)?), u64::try_from(at).unwrap_or(0)))
            };
            rows.iter().map(pull).collect()
        })
        .await
    }

    async fn forget_pull(&self, repo: &str, digest: &str) -> Result<(), MetaError> {
        let (repo, digest) = (repo.to_owned(), digest.to_owned());
        self.with(move |client| async move { client.execute(FORGET_PULL, &[&repo, &digest]).await.map(drop) })
            .await
    }

    async fn shared_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, MetaError> {
        let (name, fresh) = (name.to_owned(), fresh.to_vec());
        self.with(move |client| async move {
            client.execute(PUT_SECRET, &[&name, &fresh]).await?;
            client.query_one(SECRET, &[&name]).await?.try_get(0)
        })
        .await
    }
}
