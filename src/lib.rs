//! edge-change: change detection for field cameras and imagery on small ARM boards.
//!
//! - [`analysis`]: decode → mask → tiles → encoder embeddings → distance and vegetation (pure).
//! - [`report`]: the `check --json` object, also the body of the daemon's events.
//! - [`config`]: the configuration file; [`model`]: finding the encoder on disk.
//! - [`cli`] and [`commands`]: the command line.
//! - The daemon's parts: [`sources`] produce [`capture`]s; [`state`] keeps baselines and the outbox;
//!   [`sinks`] deliver the outbox (MQTT); [`shutdown`] turns signals into a stop every loop selects
//!   on; [`daemon`] wires them together.

pub mod analysis;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod model;
pub mod report;
pub mod shutdown;
pub mod sinks;
pub mod sources;
pub mod state;
