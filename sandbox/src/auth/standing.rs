//! What a service keeps of people's standings (logged out, role set by
//! an admin), read from Redis by [`crate::gate::sessions`]: below the service
//! state that holds it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::token::Role;

/// How long a service keeps a person's standing before reading it again.
pub const CACHE_FOR: Duration = Duration::from_millis(400);

/// Kept standings above this many are swept of stale ones.
const SWEEP_AT: usize = 4096;

/// A person's standing, as the directory holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// Logged out at this second: tokens issued then or before are refused.
    pub logged_out_at: Option<u64>,
    /// The role the directory gives the person, over their tokens' own.
    pub role: Option<Role>,
}

/// A service's copy of people's standings, each kept [`CACHE_FOR`].
#[derive(Debug, Default)]
pub struct SessionCache {
    kept: Mutex<HashMap<(String, String), (Instant, Standing)>>,
}

impl SessionCache {
    pub(crate) fn fresh(&self, tenant: &str, sub: &str) -> Option<Standing> {
        let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        kept.get(&(tenant.to_string(), sub.to_string()))
            .filter(|(at, _)| at.elapsed() < CACHE_FOR)
            .map(|(_, s)| *s)
    }

    pub(crate) fn keep(&self, tenant: &str, sub: &str, at: Instant, standing: Standing) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= SWEEP_AT {
            kept.retain(|_, (t, _)| t.elapsed() < CACHE_FOR);
        }
        kept.insert((tenant.to_string(), sub.to_string()), (at, standing));
    }

    /// Drops what is kept of `sub` (this service just changed it).
    pub fn forget(&self, tenant: &str, sub: &str) {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(tenant.to_string(), sub.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_standing_goes_stale() {
        let c = SessionCache::default();
        let s = Standing {
            logged_out_at: Some(5),
            role: None,
        };
        c.keep("t", "p", Instant::now(), s);
        assert_eq!(c.fresh("t", "p"), Some(s));
        c.keep("t", "q", Instant::now() - CACHE_FOR, s);
        assert_eq!(c.fresh("t", "q"), None);
        c.forget("t", "p");
        assert_eq!(c.fresh("t", "p"), None);
    }
}
