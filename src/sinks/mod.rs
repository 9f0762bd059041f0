//! Where events go once they are in the outbox. One sink so far: [`mqtt`], which publishes the outbox
//! oldest first and deletes a row only when the broker acknowledged it.

mod connect;
mod discovery;
pub mod mqtt;
mod topics;

pub use connect::{BrokerUrl, SinkError, CREDENTIAL_NAME};
pub use topics::Topics;
