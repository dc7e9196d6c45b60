//! The database gate: when an insert fails for a transient reason, the worker stops
//! pulling until the database answers again, so an outage neither spins nor spends the
//! messages' delivery attempts.

use deadpool_postgres::Pool;
use std::time::Duration;
use tokio::sync::watch;

/// Open while the database is believed reachable.
#[derive(Debug, Clone)]
pub struct DbGate {
    open: watch::Sender<bool>,
}

impl DbGate {
    /// A gate that starts open, with a task probing the database whenever it is closed.
    pub fn new(pool: Pool) -> (DbGate, tokio::task::JoinHandle<()>) {
        let (open, _) = watch::channel(true);
        let gate = DbGate { open };
        let probe = tokio::spawn(gate.clone().probe(pool));
        (gate, probe)
    }

    /// Closes the gate after a transient failure.
    pub fn close(&self, why: &str) {
        if self.open.send_replace(false) {
            tracing::warn!(reason = why, "Database unavailable; pausing consumption");
        }
    }

    /// Waits until the gate is open.
    pub async fn wait_open(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }

    async fn probe(self, pool: Pool) {
        let mut rx = self.open.subscribe();
        loop {
            if rx.wait_for(|open| !*open).await.is_err() {
                return;
            }
            let mut backoff = Duration::from_millis(200);
            loop {
                tokio::time::sleep(backoff).await;
                let ok = match pool.get().await {
                    Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
                    Err(_) => false,
                };
                if ok {
                    tracing::info!("Database reachable again; resuming consumption");
                    self.open.send_replace(true);
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
