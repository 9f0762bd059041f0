//! The MQTT sink against real Mosquitto brokers, each test starting its own on a free port (and one
//! scripted broker for PUBACK timing). Needs `mosquitto`, `mosquitto_passwd`, `mosquitto_sub` and
//! `openssl` (`.ci/run` installs the first three).

mod acks;
mod acl;
mod delivery;
mod discovery;
mod harness;
mod kill;
mod tls;
