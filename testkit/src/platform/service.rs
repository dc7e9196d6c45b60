//! A service running in this process, built from its typed `Config` by the crate's own
//! `build` (the code path of its binary), on the port its config names (usually 0).

use std::future::Future;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a service stopped by [`Service::stop`] may take to drain.
const DRAIN: Duration = Duration::from_secs(30);

/// A service running in this process. [`Service::stop`] stops it gracefully and returns
/// how its run ended; dropping the handle stops it abruptly.
#[derive(Debug)]
pub struct Service {
    /// The port it listens on.
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    /// Runs a service in this process; `run` gets the signal that asks it to stop.
    pub fn spawn<F>(port: u16, run: impl FnOnce(oneshot::Receiver<()>) -> F) -> Service
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        Service {
            port,
            stop: Some(tx),
            task: Some(tokio::spawn(run(rx))),
        }
    }

    /// The real ingestion service, from its configuration.
    pub async fn ingestion(config: ingestion::Config) -> anyhow::Result<Service> {
        let app = ingestion::build(config).await?;
        Ok(Service::spawn(app.port(), |rx| {
            app.run_until_stopped(stopped(rx), DRAIN)
        }))
    }

    /// The real worker, from its configuration.
    pub async fn worker(config: worker::Config) -> anyhow::Result<Service> {
        let app = worker::build(config).await?;
        Ok(Service::spawn(app.port(), |rx| {
            app.run_until_stopped(stopped(rx), DRAIN)
        }))
    }

    /// The real analytics service, from its configuration.
    pub async fn analytics(config: analytics::Config) -> anyhow::Result<Service> {
        let app = analytics::build(config).await?;
        Ok(Service::spawn(app.port(), |rx| {
            app.run_until_stopped(stopped(rx), DRAIN)
        }))
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether its run has ended (by itself, unless it was stopped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the service to stop and waits until its run ends; its result is the run's.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Resolves when the stop signal is sent or its sender is gone.
async fn stopped(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}

/// Parses a service's configuration from command-line flags (`args[0]` is the program).
pub fn parse<C: clap::Parser>(args: impl IntoIterator<Item = String>) -> anyhow::Result<C> {
    Ok(C::try_parse_from(args)?)
}
