//! Changes the key store makes on its own, with no request behind them:
//! a key destroyed at the end of its waiting period, a scheduled rotation,
//! a rotation at the GCM usage bound, imported material destroyed at its
//! expiry. They are evidence like any request, so each goes to an
//! [`EventSink`] (the audit trail, wired in at start-up: the key store
//! knows nothing of the layers above it), which CloudTrail records as a
//! service event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use uuid::Uuid;

use super::KeyStore;

/// What the key store did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceEvent {
    /// The key's waiting period ended and it was destroyed.
    KeyDeleted { key_id: Uuid },
    /// The key rotated without a request.
    KeyRotated {
        key_id: Uuid,
        reason: RotationReason,
    },
    /// The key's imported material expired and was destroyed.
    ExpiredMaterialDeleted { key_id: Uuid },
}

/// Why a key rotated on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationReason {
    /// Its rotation schedule came due.
    Scheduled,
    /// Its primary version reached the GCM usage bound.
    GcmUsageBound,
}

/// The future of [`EventSink::record`].
pub type Recording<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where service events go. `record` returns once the event is recorded
/// as durably as a request's record would be; a sink that cannot record
/// one says so in its own log (the change is already on the token).
pub trait EventSink: Send + Sync {
    fn record<'a>(&'a self, event: &'a ServiceEvent) -> Recording<'a>;
}

impl KeyStore {
    /// Sends the store's service events to `sink` (none until then: they
    /// are only logged).
    pub fn send_events_to(&mut self, sink: Arc<dyn EventSink>) {
        self.events = Some(sink);
    }

    /// Records that the store destroyed `key_id` at the end of its
    /// waiting period.
    pub(super) async fn key_deleted(&self, key_id: Uuid) {
        self.service_event(ServiceEvent::KeyDeleted { key_id })
            .await;
    }

    /// Records that `key_id` rotated on its own, for `reason`.
    pub(super) async fn key_rotated(&self, key_id: Uuid, reason: RotationReason) {
        self.service_event(ServiceEvent::KeyRotated { key_id, reason })
            .await;
    }

    /// Records that `key_id`'s imported material expired and is destroyed.
    pub(super) async fn material_expired(&self, key_id: Uuid) {
        self.service_event(ServiceEvent::ExpiredMaterialDeleted { key_id })
            .await;
    }

    /// Records `event`, something the store did on its own.
    async fn service_event(&self, event: ServiceEvent) {
        match &self.events {
            Some(sink) => sink.record(&event).await,
            None => tracing::info!(?event, "service event (no audit sink)"),
        }
    }
}
