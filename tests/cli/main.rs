//! The integration test binary: runs the real `edge-change` on images generated into temp dirs,
//! the real model from models/ and, where present, real imagery from ../shared/data.

mod analyzer;
mod check;
mod config;
mod deploy;
mod errors;
mod examples;
mod golden;
mod harness;
mod models;
mod pairs;
mod shared_data;
