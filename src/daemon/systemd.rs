//! systemd's notify protocol through the `sd-notify` crate: READY=1, STATUS=…, STOPPING=1 and
//! WATCHDOG=1. Nothing is sent when the daemon was not started by systemd (no NOTIFY_SOCKET).
//!
//! Sending is a blocking write to a datagram socket, which blocks for as long as the receiver's
//! queue is full, so it happens on a thread of its own: the processing loop only queues a
//! message and never waits for systemd. A failed notification is logged, never fatal.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::time::Duration;

use sd_notify::NotifyState;

/// Messages waiting for the notify thread. When full (systemd not reading), new ones are dropped:
/// a STATUS line is replaced by the next one, and a missed watchdog ping is what the watchdog is
/// there to notice.
const QUEUE: usize = 32;

#[derive(Debug)]
enum Message {
    Ready(String),
    Status(String),
    Stopping,
    Watchdog,
}

/// A handle on the notify thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `None` when not run by systemd.
    tx: Option<SyncSender<Message>>,
}

impl Notifier {
    /// Starts the notify thread when NOTIFY_SOCKET is set.
    pub fn start() -> Notifier {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return Notifier { tx: None };
        }
        let (tx, rx) = sync_channel::<Message>(QUEUE);
        let spawned = std::thread::Builder::new().name("sd-notify".into()).spawn(move || {
            for message in rx {
                let sent = match &message {
                    Message::Ready(status) => {
                        sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)])
                    }
                    Message::Status(status) => sd_notify::notify(&[NotifyState::Status(status)]),
                    Message::Stopping => {
                        sd_notify::notify(&[NotifyState::Stopping, NotifyState::Status("stopping")])
                    }
                    Message::Watchdog => sd_notify::notify(&[NotifyState::Watchdog]),
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, ?message, "cannot notify systemd");
                }
            }
        });
        match spawned {
            Ok(_) => Notifier { tx: Some(tx) },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the systemd notify thread");
                Notifier { tx: None }
            }
        }
    }

    fn send(&self, message: Message) {
        if let Some(tx) = &self.tx {
            match tx.try_send(message) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(m)) => {
                    tracing::debug!(message = ?m, "systemd is not reading")
                }
            }
        }
    }

    /// Start-up is complete: the model is loaded and the sources are started.
    pub fn ready(&self, status: &str) {
        self.send(Message::Ready(status.to_owned()));
    }

    pub fn status(&self, status: &str) {
        self.send(Message::Status(status.to_owned()));
    }

    pub fn stopping(&self) {
        self.send(Message::Stopping);
    }

    pub fn watchdog(&self) {
        self.send(Message::Watchdog);
    }
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
}
