//! Why a store could not be had.

use harness::FixtureError;

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
        /// Its value.
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
    pub(crate) fn start(
        store: &'static str,
        step: impl Into<String>,
        reason: impl ToString,
    ) -> Self {
        ProvisionError::Start {
            store,
            step: step.into(),
            reason: reason.to_string(),
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
