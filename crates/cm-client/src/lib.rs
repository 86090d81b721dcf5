//! The one typed client of the master's API (docs/architecture.md, "One client").
//!
//! Three layers, each in one place:
//! - [`endpoints`]: one function per route, taking `cm-api` request types and
//!   naming the `cm-api` answer type; every path is built there and nowhere else.
//! - [`request`] and [`retry`]: what is sent (method, path, body, auth, timeout)
//!   and how an answer or a failure is read, without any I/O.
//! - two transports over the same endpoints: [`Client`] (async, for
//!   `cloudhostd`) and, with the `blocking` feature, [`blocking::Client`] (for
//!   `cm`, the tests and `cmbench`), which also tries a call again with the same
//!   `Idempotency-Key` while the master cannot be reached.
//!
//! Every HTTP client of the master is built by [`build`].

#[cfg(feature = "blocking")]
pub mod blocking;
pub mod build;
pub mod endpoints;
mod error;
mod nonblocking;
pub mod request;
pub mod retry;

pub use endpoints as api;
pub use error::Error;
pub use nonblocking::Client;
pub use request::{seg, Auth, Endpoint, Request};
pub use reqwest;

/// The header every call that changes something carries (docs/api.md).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
