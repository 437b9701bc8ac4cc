//! The limits every backend applies to an appended body: a total size cap, an exact length
//! when the client declared one (`Content-Range`), and an idle timeout.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use super::{AppendError, Body};

/// What an append accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendLimits {
    /// The upload may not grow past this many bytes in all.
    pub max_len: u64,
    /// The body must be exactly this long.
    pub exact: Option<u64>,
    /// Give up when the body sends nothing for this long.
    pub idle: Duration,
}

/// A body read within [`AppendLimits`], for an upload that holds `start_len` bytes already.
pub struct Limited<'a> {
    body: Body<'a>,
    limits: AppendLimits,
    start_len: u64,
    received: u64,
}

impl<'a> Limited<'a> {
    pub fn new(body: Body<'a>, limits: AppendLimits, start_len: u64) -> Self {
        Limited {
            body,
            limits,
            start_len,
            received: 0,
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next chunk; `Ok(None)` at the end of a body that kept to the limits.
    pub async fn next(&mut self) -> Result<Option<Bytes>, AppendError> {
        let idle = self.limits.idle;
        let Ok(next) = tokio::time::timeout(idle, self.body.next()).await else {
            return Err(AppendError::Idle { secs: idle.as_secs() });
        };
        let Some(item) = next else {
            return match self.limits.exact {
                Some(expected) if expected != self.received => Err(AppendError::LengthMismatch {
                    expected,
                    got: self.received,
                }),
                _ => Ok(None),
            };
        };
        let chunk = item.map_err(AppendError::Body)?;
        self.received += chunk.len() as u64;
        if self.start_len + self.received > self.limits.max_len {
            return Err(AppendError::TooLarge {
                limit: self.limits.max_len,
            });
        }
        if let Some(expected) = self.limits.exact.filter(|&e| self.received > e) {
            return Err(AppendError::LengthMismatch {
                expected,
                got: self.received,
            });
        }
        Ok(Some(chunk))
    }
}
