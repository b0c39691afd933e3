//! Signed service tokens: who calls, for which service (audience), for
//! which tenant, until when. Compact form:
//! `hex(json claims).hex(HMAC-SHA256(secret, hex(json claims)))`.
//! A service accepts a token only if the signature matches, it is meant
//! for that service, and it has not expired; every rejection has a reason
//! (answered as `401` with the reason).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The calling service.
    pub iss: String,
    /// The service the token is for.
    pub aud: String,
    /// The tenant the call acts for (bound to `X-Tenant-ID`).
    pub tenant: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `claims.signature`, not hex, not JSON.
    #[error("malformed token")]
    Malformed,
    /// The signature does not match the claims.
    #[error("bad signature")]
    BadSignature,
    /// Meant for another service.
    #[error("token is for `{0}`, not this service")]
    WrongAudience(String),
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// For another tenant than the request's `X-Tenant-ID`.
    #[error("token is for another tenant")]
    WrongTenant,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn mac(secret: &[u8], payload: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    m.update(payload.as_bytes());
    m
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs a token from `iss` for `aud` acting for `tenant`, valid for `ttl`.
pub fn sign(secret: &[u8], iss: &str, aud: &str, tenant: &str, ttl: Duration) -> String {
    let claims = Claims {
        iss: iss.into(),
        aud: aud.into(),
        tenant: tenant.into(),
        exp: unix_now() + ttl.as_secs().max(1),
    };
    sign_claims(secret, &claims)
}

/// Signs given claims.
pub fn sign_claims(secret: &[u8], claims: &Claims) -> String {
    let payload = hex(serde_json::to_string(claims).unwrap_or_default().as_bytes());
    let sig = hex(&mac(secret, &payload).finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// Checks a token for service `audience` and tenant `tenant` at time `now`
/// (seconds since the Unix epoch).
pub fn verify_at(
    secret: &[u8],
    token: &str,
    audience: &str,
    tenant: &str,
    now: u64,
) -> Result<Claims, TokenError> {
    let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let sig = unhex(sig).ok_or(TokenError::Malformed)?;
    mac(secret, payload)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: Claims = serde_json::from_slice(&unhex(payload).ok_or(TokenError::Malformed)?)
        .map_err(|_| TokenError::Malformed)?;
    if claims.aud != audience {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.tenant != tenant {
        return Err(TokenError::WrongTenant);
    }
    Ok(claims)
}

/// Checks a token now.
pub fn verify(
    secret: &[u8],
    token: &str,
    audience: &str,
    tenant: &str,
) -> Result<Claims, TokenError> {
    verify_at(secret, token, audience, tenant, unix_now())
}
