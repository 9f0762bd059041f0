//! systemd's notify protocol through the `sd-notify` crate: READY=1, STATUS=…, STOPPING=1 and the
//! watchdog. Every call does nothing when the daemon was not started by systemd (no NOTIFY_SOCKET),
//! and a failed notification is logged, never fatal: the daemon's work matters more than its
//! bookkeeping.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// Start-up is complete: the model is loaded and the sources are started.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// systemd's watchdog, when the unit sets `WatchdogSec=` (WATCHDOG_USEC in the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watchdog {
    /// systemd restarts the service when no ping arrived for this long.
    pub timeout: Duration,
}

impl Watchdog {
    pub fn from_env() -> Option<Watchdog> {
        sd_notify::watchdog_enabled().filter(|t| !t.is_zero()).map(|timeout| Watchdog { timeout })
    }

    /// Pinging at half the timeout leaves a whole half for one late ping.
    pub fn period(&self) -> Duration {
        self.timeout / 2
    }

    pub fn ping(&self) {
        send(&[NotifyState::Watchdog]);
    }
}
