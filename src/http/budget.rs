//! What unauthenticated clients may make the gateway hold in request
//! bodies: a budget per connection (shared by its HTTP/2 streams) and one
//! for the process, in bytes.
//!
//! A request reserves its whole declared body (its content-length, or the
//! body limit when it declares none) from both before reading any of it,
//! in one step each, so no request holds part of a budget while waiting for
//! the rest of it. The reservation lasts until the body is verified or
//! refused. A request that cannot reserve within [`WAIT`] is refused
//! (ThrottlingException): its data, left unread, is bounded by the HTTP/2
//! flow-control window, and it must not hold that window for long, since
//! the connection's other streams need it to finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request may wait for budget (less if its body timeout ends
/// sooner).
pub const WAIT: Duration = Duration::from_secs(1);

/// One connection's view of the budgets, put in each of its requests'
/// extensions by the serving loop.
#[derive(Clone)]
pub struct BodyBudget {
    connection: Arc<Semaphore>,
    total: Arc<Semaphore>,
}

/// A reservation; released when dropped.
pub struct Reserved {
    _connection: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

impl BodyBudget {
    /// The process's budget of `bytes`.
    pub fn total(bytes: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))
    }

    /// A new connection's budget of `bytes`, drawing on `total`.
    pub fn for_connection(bytes: usize, total: &Arc<Semaphore>) -> BodyBudget {
        BodyBudget {
            connection: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
            total: total.clone(),
        }
    }

    /// Reserves `bytes` from the connection's budget, then from the total,
    /// waiting at most `wait`; `None` when they are not to be had by then.
    pub async fn reserve(&self, bytes: usize, wait: Duration) -> Option<Reserved> {
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let reserve = async {
            let connection = self.connection.clone().acquire_many_owned(n).await.ok()?;
            let total = self.total.clone().acquire_many_owned(n).await.ok()?;
            Some(Reserved {
                _connection: connection,
                _total: total,
            })
        };
        tokio::time::timeout(wait, reserve).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_cannot_reserve_past_its_budget_or_the_total_and_gets_it_back() {
        let total = BodyBudget::total(300);
        let a = BodyBudget::for_connection(200, &total);
        let b = BodyBudget::for_connection(200, &total);
        let short = Duration::from_millis(20);
        let first = a.reserve(150, short).await.expect("within both budgets");
        assert!(
            a.reserve(100, short).await.is_none(),
            "past the connection's"
        );
        let second = b.reserve(150, short).await.expect("within both budgets");
        assert!(b.reserve(10, short).await.is_none(), "past the total");
        drop(first);
        assert!(b.reserve(10, short).await.is_some(), "released on drop");
        drop(second);
    }
}
