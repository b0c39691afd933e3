//! The mesh's tokens, a service's or a person's: JWTs (HS256, through the
//! `jsonwebtoken` crate) saying who calls (`iss`), for which service
//! (`aud`), for which tenant, from when (`iat`, `nbf`) until when (`exp`),
//! with a unique id (`jti`).
//!
//! A service accepts a token only if it is an HS256 JWT (`alg: none` or any
//! other algorithm is refused by name), its signature matches, it is meant
//! for that service and tenant, it is within its validity (with
//! [`LEEWAY`] for clock skew, on an injectable `now`), its lifetime is at
//! most [`MAX_LIFETIME`], and its issuer is the `X-Source-Service` the
//! request names. Every rejection has a reason, answered as `401` with the
//! reason and never with the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The longest validity a token may have (`exp - iat`).
pub const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY: u64 = 5;

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
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: u64,
    /// The token's unique id (a mutating call's token is accepted once).
    #[serde(default)]
    pub jti: String,
    /// A person's role, in a user token (absent in a service's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The person, in a user token from an identity provider that names
    /// one (a staff id, never a patient's): what a logout or a role change
    /// applies to (see [`crate::gate::sessions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
}

/// The role of a person calling the mesh (a user token's `role`). Each
/// route states which roles may call it ([`crate::auth::Access`]), and
/// answers only what the role needs (a billing clerk never sees an SSN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers patients and runs visits; sees the whole record.
    Clinician,
    /// Works on claims; sees patients without their SSN.
    BillingClerk,
    /// Reads the audit trail and handles violations.
    ComplianceOfficer,
    /// Everything, `/admin/*` included (test mode).
    Admin,
}

impl Role {
    /// All four.
    pub const ALL: [Role; 4] = [
        Role::Clinician,
        Role::BillingClerk,
        Role::ComplianceOfficer,
        Role::Admin,
    ];

    /// Its name in a token (`billing_clerk`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::BillingClerk => "billing_clerk",
            Role::ComplianceOfficer => "compliance_officer",
            Role::Admin => "admin",
        }
    }

    /// The role of a name.
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or its claims are not ours.
    #[error("malformed token")]
    Malformed,
    /// Signed with another algorithm than HS256 (`none` included).
    #[error("token algorithm `{0}` is not accepted (HS256 only)")]
    Algorithm(String),
    /// The signature does not match the claims.
    #[error("bad signature")]
    BadSignature,
    /// Meant for another service.
    #[error("token is for `{0}`, not this service")]
    WrongAudience(String),
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Before its `nbf` (or issued in the future).
    #[error("token not yet valid")]
    NotYetValid,
    /// Valid for longer than [`MAX_LIFETIME`].
    #[error("token lifetime of {0} s is over the {max} s allowed", max = MAX_LIFETIME.as_secs())]
    LifetimeTooLong(u64),
    /// For another tenant than the request's `X-Tenant-ID`.
    #[error("token is for another tenant")]
    WrongTenant,
    /// Issued by another service than the request's `X-Source-Service`.
    #[error("token issued by `{iss}`, but X-Source-Service is `{source_service}`")]
    WrongIssuer {
        /// The token's `iss`.
        iss: String,
        /// The request's `X-Source-Service`.
        source_service: String,
    },
    /// A mutating call with a token already used for one.
    #[error("token already used (replayed jti)")]
    Replayed,
    /// A mutating call with a token without `jti`.
    #[error("token has no jti, required for a mutating call")]
    NoJti,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token id no other token of this process has: time, process, count,
/// mixed by std's per-process random hasher keys.
fn new_jti() -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}{:08x}", h.finish(), NEXT.load(Ordering::Relaxed))
}

/// Signs a service's token from `iss` for `aud` acting for `tenant`,
/// valid for `ttl` from now.
pub fn sign(secret: &[u8], iss: &str, aud: &str, tenant: &str, ttl: Duration) -> String {
    sign_claims(secret, &claims(iss, None, aud, tenant, ttl))
}

/// Signs a person's token: `role`, through client `iss`, for `aud`,
/// acting for `tenant`, valid for `ttl` from now.
pub fn sign_user(
    secret: &[u8],
    iss: &str,
    role: Role,
    aud: &str,
    tenant: &str,
    ttl: Duration,
) -> String {
    sign_claims(secret, &claims(iss, Some(role), aud, tenant, ttl))
}

/// Signs the token of person `sub` with `role`, through client `iss`, for
/// `aud`, acting for `tenant`, valid for `ttl` from now: a logout of `sub`
/// or a change of its role applies to it.
pub fn sign_person(
    secret: &[u8],
    iss: &str,
    sub: &str,
    role: Role,
    aud: &str,
    tenant: &str,
    ttl: Duration,
) -> String {
    let mut c = claims(iss, Some(role), aud, tenant, ttl);
    c.sub = Some(sub.to_string());
    sign_claims(secret, &c)
}

/// Fresh claims, valid for `ttl` from now, with a new `jti`.
pub fn claims(iss: &str, role: Option<Role>, aud: &str, tenant: &str, ttl: Duration) -> Claims {
    let now = unix_now();
    Claims {
        iss: iss.into(),
        aud: aud.into(),
        tenant: tenant.into(),
        exp: now + ttl.as_secs().max(1),
        iat: now,
        nbf: now,
        jti: new_jti(),
        role,
        sub: None,
    }
}

/// Signs given claims (HS256).
pub fn sign_claims(secret: &[u8], claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap_or_default()
}

/// The header segment this module's tokens carry (`HS256`), encoded: a
/// token that carries it is not parsed twice.
static SIGNED_HERE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    use base64::Engine as _;
    let header = serde_json::to_vec(&Header::new(Algorithm::HS256)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(header)
});

/// What [`verify_at`] checks of a token's signature (its time, audience and
/// tenant are checked on its claims), made once.
static VALIDATION: std::sync::LazyLock<Validation> = std::sync::LazyLock::new(|| {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
});

/// The `alg` of a token's header, read before anything is trusted (so that
/// `none` is named in the refusal).
fn header_alg(token: &str) -> Result<String, TokenError> {
    use base64::Engine as _;
    let head = token.split('.').next().ok_or(TokenError::Malformed)?;
    if head == SIGNED_HERE.as_str() {
        return Ok("HS256".to_string());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    header["alg"]
        .as_str()
        .map(str::to_string)
        .ok_or(TokenError::Malformed)
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
    let alg = header_alg(token)?;
    if alg != "HS256" {
        return Err(TokenError::Algorithm(alg));
    }
    // Time, audience and tenant are checked below, on `now`.
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &VALIDATION)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    TokenError::Algorithm(alg.clone())
                }
                _ => TokenError::Malformed,
            })?;
    let claims = data.claims;
    if claims.aud != audience {
        return Err(TokenError::WrongAudience(claims.aud));
    }
    if now >= claims.exp.saturating_add(LEEWAY) {
        return Err(TokenError::Expired);
    }
    if claims.nbf > now + LEEWAY || claims.iat > now + LEEWAY {
        return Err(TokenError::NotYetValid);
    }
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if claims.iat == 0 || lifetime > MAX_LIFETIME.as_secs() {
        return Err(TokenError::LifetimeTooLong(lifetime));
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

/// Checks a token now, and that its issuer is the service the request says
/// it comes from (`X-Source-Service`, when the request names one).
pub fn verify_from(
    secret: &[u8],
    token: &str,
    audience: &str,
    tenant: &str,
    source_service: Option<&str>,
) -> Result<Claims, TokenError> {
    let claims = verify(secret, token, audience, tenant)?;
    match source_service {
        Some(s) if s != claims.iss => Err(TokenError::WrongIssuer {
            iss: claims.iss,
            source_service: s.to_string(),
        }),
        _ => Ok(claims),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_signed_here_take_the_short_way_and_others_are_still_read() {
        let token = sign(
            b"secret",
            "billing-engine",
            "healthcare-api",
            "t1",
            MAX_LIFETIME,
        );
        assert_eq!(token.split('.').next(), Some(SIGNED_HERE.as_str()));
        assert!(verify(b"secret", &token, "healthcare-api", "t1").is_ok());
        // The same claims under `alg: none`: read, named, refused.
        use base64::Engine as _;
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#);
        let rest = token.split_once('.').map_or("", |(_, r)| r);
        let forged = format!("{none}.{rest}");
        assert!(matches!(
            verify(b"secret", &forged, "healthcare-api", "t1"),
            Err(TokenError::Algorithm(alg)) if alg == "none"
        ));
    }
}
