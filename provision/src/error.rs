//! Why a store could not be had. No message carries a password: every
//! value and reason is masked when the error is built.

use harness::FixtureError;

use crate::secret::mask;

/// Why PostgreSQL or Redis could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Neither a URL nor the binaries to start a private instance: the
    /// tests that need the store are skipped with this reason.
    #[error("{store}: {var} is unset and {binaries} not on PATH")]
    Unavailable {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// The variable that would name a server.
        var: &'static str,
        /// The binaries looked for (`initdb/postgres are`).
        binaries: &'static str,
    },
    /// A URL in the environment is not one.
    #[error("{var} `{value}` is not a {store} URL: {reason}")]
    BadUrl {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// The variable.
        var: &'static str,
        /// Its value, its password masked ([`crate::mask`]).
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A server named by the environment, or just started, did not answer.
    #[error("{store} at {address}: cannot connect: {reason}")]
    Connect {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// Where.
        address: String,
        /// Why.
        reason: String,
    },
    /// A private instance could not be prepared or started.
    #[error("{store}: {step}: {reason}")]
    Start {
        /// `PostgreSQL` or `Redis`.
        store: &'static str,
        /// What was being done (`initdb`, `creating the instance directory`).
        step: String,
        /// Why (the server's log when it has one).
        reason: String,
    },
    /// A statement on the server failed (creating a database, a migration).
    #[error("PostgreSQL: {0}")]
    Sql(String),
}

impl ProvisionError {
    /// A [`ProvisionError::BadUrl`]; the value and the reason are masked
    /// here, so neither this error's `Display` nor its `Debug` can show a
    /// password (the parsers' own messages may quote their input).
    pub(crate) fn bad_url(
        store: &'static str,
        var: &'static str,
        value: &str,
        reason: impl ToString,
    ) -> Self {
        ProvisionError::BadUrl {
            store,
            var,
            value: mask(value),
            reason: mask(&reason.to_string()),
        }
    }

    /// A [`ProvisionError::Connect`], its reason masked like
    /// [`ProvisionError::bad_url`]'s.
    pub(crate) fn connect(
        store: &'static str,
        address: impl ToString,
        reason: impl ToString,
    ) -> Self {
        ProvisionError::Connect {
            store,
            address: mask(&address.to_string()),
            reason: mask(&reason.to_string()),
        }
    }

    pub(crate) fn start(
        store: &'static str,
        step: impl Into<String>,
        reason: impl ToString,
    ) -> Self {
        ProvisionError::Start {
            store,
            step: step.into(),
            reason: mask(&reason.to_string()),
        }
    }
}

impl From<ProvisionError> for FixtureError {
    /// A missing store skips the test; anything else fails it.
    fn from(e: ProvisionError) -> Self {
        match e {
            ProvisionError::Unavailable { .. } => FixtureError::skip(e.to_string()),
            _ => FixtureError::new(e.to_string()),
        }
    }
}
