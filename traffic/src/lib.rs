//! Network traffic for service tests, three tools on loopback:
//!
//! - [`chaos`]: shape it. A TCP proxy in front of a service with faults
//!   added and removed while traffic flows (Toxiproxy's toxics), and
//!   [`toxiproxy`], Toxiproxy's HTTP API over it (`chaos-proxy --api`), so
//!   existing Toxiproxy clients drive it unchanged.
//! - [`stub`]: fake it. wiremock HTTP stubs that really close their port,
//!   and an insurance stub that answers for a generated coverage.
//! - [`load`]: make it. Open and closed load models with per-worker
//!   HdrHistograms, latencies corrected for coordinated omission.
//!
//! ```ignore
//! use traffic::chaos::{ChaosProxy, Fault, FaultKind};
//! let proxy = ChaosProxy::start(service_addr).await?;
//! proxy.add(Fault::new(FaultKind::Latency { latency: ms(200), jitter: ms(20) }));
//! ```
#![deny(missing_docs)]

pub mod chaos;
pub mod load;
pub mod stub;
pub mod toxiproxy;
