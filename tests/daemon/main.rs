//! Integration tests of the daemon's parts with real components: sources running real processes,
//! watching real folders and polling a real HTTP server on 127.0.0.1:0, and the SQLite state store
//! surviving a SIGKILL.

mod command;
mod directory;
mod harness;
mod http;
mod state;
