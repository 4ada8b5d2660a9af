//! ChatCrafter Gateway's native host: the `gateway` binary's library.
//!
//! - [`plugin`]: the sandboxed WebAssembly plugin host and registry.
//! - [`app`]: the running gateway's state, built from the configuration.
//! - [`http`]: the hyper server and its routes.
//! - [`audit`]: the node's batching writer of audit entries.
//! - [`inbound`]: where verified events go: recorded in the store before
//!   the channel hears 2xx.
//! - [`worker`]: the job queue's worker — agent answers, deliveries,
//!   reminders — and [`outbound`], its HTTP client.
//! - [`dev`]: dev mode's generated secrets and configuration.
//! - [`cli`]: the command-line commands.

pub mod app;
pub mod audit;
pub mod cli;
pub mod dev;
pub mod http;
pub mod ids;
pub mod import;
pub mod inbound;
pub mod load;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod plugin;
pub mod store;
pub mod worker;
