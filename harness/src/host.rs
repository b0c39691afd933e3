//! Hosted session fixtures: session fixtures set up once, in a host
//! process the supervisor starts, and shared with the isolated test
//! processes, which *attach* to them instead of setting up their own. An
//! isolated test then costs a process, not a mesh.
//!
//! A session fixture is hostable when it can describe itself as a handle
//! (addresses, a secret, a database URL, a key prefix: JSON) and be
//! rebuilt from one in another process ([`Hostable`]), and is registered
//! with [`hostable!`](crate::hostable!):
//!
//! ```ignore
//! use service_test::host::Hostable;
//!
//! impl Hostable for Broker {
//!     fn handle(&self) -> Result<serde_json::Value, FixtureError> {
//!         Ok(serde_json::json!({"addr": self.addr.to_string()}))
//!     }
//!     async fn attach(handle: serde_json::Value, _cx: &mut FixtureCx) -> Result<Self, FixtureError> {
//!         let addr = handle["addr"].as_str().and_then(|a| a.parse().ok())
//!             .ok_or_else(|| FixtureError::new("Broker handle: no addr"))?;
//!         Ok(Broker { addr, _server: None })
//!     }
//! }
//! service_test::hostable!(Broker);
//! ```
//!
//! When two or more tests of a run are isolated and the binary registers
//! hostable fixtures, the supervisor starts the binary once more as the
//! host: it sets up every registered hostable fixture (with what they
//! depend on), writes their handles to a private file (mode 0600) and
//! waits; each isolated test process reads the file, and a session fixture
//! with a handle there is attached rather than set up. When the isolated
//! tests are done the host tears its fixtures down (private instances
//! included) and exits; it dies with the supervisor whatever ends it. A
//! fixture the host could not set up is not hosted: each process sets it
//! up itself (or skips, with the reason).

pub use crate::fixture::{HostDef, Hostable};

/// Registers a [`Hostable`] session fixture: `service_test::hostable!(Postgres);`
#[macro_export]
macro_rules! hostable {
    ($t:ty) => {
        $crate::__private::inventory::submit! {
            $crate::host::HostDef {
                name: ::core::stringify!($t),
                type_id: || ::std::any::TypeId::of::<$t>(),
                host: |cx| ::std::boxed::Box::pin(async move {
                    let held = cx.held::<$t>().await?;
                    <$t as $crate::host::Hostable>::handle(&*held)
                }),
                attach: |handle, cx| ::std::boxed::Box::pin(async move {
                    let value = <$t as $crate::host::Hostable>::attach(handle, cx).await?;
                    ::core::result::Result::Ok(::std::boxed::Box::new(value)
                        as ::std::boxed::Box<dyn ::std::any::Any + ::core::marker::Send + ::core::marker::Sync>)
                }),
            }
        }
    };
}
