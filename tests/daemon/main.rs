//! Integration tests of the daemon with real components: sources running real processes, watching
//! real folders and polling a real HTTP server on 127.0.0.1:0; the SQLite state store surviving a
//! SIGKILL; and `edge-change run` itself, the real binary and model, driven by files, signals and
//! its systemd notify socket.

mod command;
mod directory;
mod harness;
mod http;
mod run;
mod running;
mod state;
