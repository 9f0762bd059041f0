//! Shutdown and reload signals. SIGTERM (what systemd sends) and SIGINT become one [`Shutdown`] that every
//! loop selects on; SIGHUP asks for the configuration to be re-read. Draining (finishing the capture in
//! hand, flushing state) is the daemon's job: this module only says when.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// A cloneable "stop now" flag that can be awaited. Triggering it is idempotent.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once shutdown was triggered (at once if it already was). Cancel-safe, for `select!`.
    pub async fn wait(&self) {
        self.0.cancelled().await
    }

    /// A shutdown of its own that also follows this one: for a part stopped on its own, such as a source
    /// replaced when the configuration is reloaded.
    pub fn child(&self) -> Shutdown {
        Shutdown(self.0.child_token())
    }
}

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: finish the capture in hand, flush state, exit 0.
    Terminate(&'static str),
    /// SIGHUP: re-read and validate the configuration; keep the old one if invalid.
    Reload,
}

/// The process's signal handlers. Once created, these signals no longer kill the process (for its whole
/// life: tokio keeps the handlers installed), so create it early in start-up.
#[derive(Debug)]
pub struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; needs a running tokio runtime.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal. Cancel-safe: a signal that arrives while nobody waits is kept (coalesced with
    /// others of its kind) until the next call.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Terminate("SIGTERM"),
            _ = self.interrupt.recv() => Signal::Terminate("SIGINT"),
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    /// Triggers `shutdown` on the first SIGTERM or SIGINT and reports each SIGHUP on `reload`. Runs until
    /// shutdown (whichever way it was triggered). `reload` holds one pending request: SIGHUPs that arrive
    /// before the daemon took the previous one are merged into it.
    pub async fn forward(mut self, shutdown: Shutdown, reload: tokio::sync::mpsc::Sender<()>) {
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                signal = self.recv() => match signal {
                    Signal::Terminate(name) => {
                        tracing::info!(signal = name, "shutting down");
                        shutdown.trigger();
                        return;
                    }
                    Signal::Reload => {
                        tracing::info!("reload requested (SIGHUP)");
                        // Full means a reload is already pending, which will read the newest file.
                        let _ = reload.try_send(());
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn send(signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    #[tokio::test]
    async fn shutdown_reaches_every_clone_and_child() {
        let shutdown = Shutdown::new();
        let clone = shutdown.clone();
        let child = shutdown.child();
        assert!(!child.is_triggered());
        let waiter = tokio::spawn(async move { clone.wait().await });
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woke").expect("joined");
        assert!(child.is_triggered());
        // A child stops on its own without stopping its parent.
        let parent = Shutdown::new();
        parent.child().trigger();
        assert!(!parent.is_triggered());
    }

    #[tokio::test]
    async fn sighup_asks_for_reload_and_sigterm_shuts_down() {
        let signals = Signals::new().expect("install handlers");
        let shutdown = Shutdown::new();
        let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(signals.forward(shutdown.clone(), reload_tx));

        send("-HUP");
        tokio::time::timeout(Duration::from_secs(10), reload_rx.recv())
            .await
            .expect("reload within 10s")
            .expect("open");
        assert!(!shutdown.is_triggered());

        send("-TERM");
        tokio::time::timeout(Duration::from_secs(10), shutdown.wait()).await.expect("shut down");
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("ended").expect("joined");
    }
}
