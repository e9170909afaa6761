//! Identity: HMAC-SHA256 JSON Web Tokens (HS256). `POST /api/login` is a demo identity provider that signs a
//! token for any well-formed name; any other issuer holding the same secret works too.
//!
//! Claims: `sub` (the user name, which owns topic `users.<sub>`), `role` (`user` or `publisher`), `iat`, `exp`
//! (Unix seconds). Only `alg: HS256` is accepted, the signature is checked in constant time, and an expired token
//! is refused.
//!
//! ```
//! use marquee_gateway::auth::{Auth, Role};
//! let auth = Auth::new(b"a secret of at least 32 bytes....".to_vec());
//! let token = auth.issue("alice", Role::User, 1_700_000_000, 3600);
//! let claims = auth.verify(&token, 1_700_000_100).unwrap();
//! assert_eq!((claims.sub.as_str(), claims.role), ("alice", Role::User));
//! assert!(auth.verify(&token, 1_700_003_601).is_err()); // expired
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::fmt;

/// What a token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Bids, and reads its own `users.<sub>` topic.
    User,
    /// Publishes events to any shared topic (`POST /api/publish`, WebSocket `publish`).
    Publisher,
}

/// A verified token's claims.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default = "default_role")]
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
}

fn default_role() -> Role {
    Role::User
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Not three base64url parts of JSON.
    Malformed,
    /// Not HS256.
    Algorithm,
    /// The signature does not match the secret.
    Signature,
    /// Past `exp`.
    Expired,
    /// `sub` is not a valid user name.
    BadSubject,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Malformed => "malformed token",
            AuthError::Algorithm => "token algorithm is not HS256",
            AuthError::Signature => "bad token signature",
            AuthError::Expired => "token expired",
            AuthError::BadSubject => "token subject is not a valid user name",
        })
    }
}

impl std::error::Error for AuthError {}

/// `[A-Za-z0-9_-]`, 1 to 32 bytes: safe in a topic name (`users.<name>`) and a URL.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Auth {
    secret: Vec<u8>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Auth { secret: <hidden> }")
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

#[derive(Deserialize)]
struct Header {
    alg: String,
}

impl Auth {
    /// An authority with `secret`.
    pub fn new(secret: Vec<u8>) -> Auth {
        Auth { secret }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        match Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// A token for `sub` with `role`, valid `ttl_secs` from `now` (Unix seconds).
    pub fn issue(&self, sub: &str, role: Role, now: i64, ttl_secs: i64) -> String {
        let claims = Claims { sub: sub.to_owned(), role, iat: now, exp: now + ttl_secs };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(HEADER), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = mac.finalize().into_bytes();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// Checks a token at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(AuthError::Malformed);
        };
        let header: Header =
            URL_SAFE_NO_PAD.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(AuthError::Malformed)?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Malformed)?;
        let mut mac = self.mac();
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        mac.verify_slice(&sig).map_err(|_| AuthError::Signature)?;
        let claims: Claims =
            URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(AuthError::Malformed)?;
        if now >= claims.exp {
            return Err(AuthError::Expired);
        }
        if !valid_user_name(&claims.sub) {
            return Err(AuthError::BadSubject);
        }
        Ok(claims)
    }
}

/// Unix seconds now.
pub fn unix_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// 32 random bytes from the OS, hex-encoded: the secret of a demo-mode run. Fails when the OS has no randomness
/// to give (the server then does not start).
pub fn random_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_rejects_tampering_other_secrets_and_other_algorithms() {
        let auth = Auth::new(b"secret-one".to_vec());
        let t = auth.issue("alice", Role::User, 100, 60);
        assert_eq!(auth.verify(&t, 100).unwrap().sub, "alice");
        assert_eq!(Auth::new(b"secret-two".to_vec()).verify(&t, 100), Err(AuthError::Signature));
        // Swap the payload for one claiming to be a publisher: the signature no longer matches.
        let forged = auth.issue("alice", Role::Publisher, 100, 60);
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = forged.split('.').nth(1).unwrap();
        assert_eq!(auth.verify(&parts.join("."), 100), Err(AuthError::Signature));
        let none_alg = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), t.split('.').nth(1).unwrap());
        assert_eq!(auth.verify(&none_alg, 100), Err(AuthError::Algorithm));
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(auth.verify(bad, 100).is_err(), "{bad}");
        }
        assert_eq!(auth.verify(&t, 160), Err(AuthError::Expired));
        assert_eq!(auth.verify(&auth.issue("no spaces", Role::User, 100, 60), 100), Err(AuthError::BadSubject));
    }

    #[test]
    fn auth_user_names() {
        assert!(valid_user_name("alice_01-x"));
        for bad in ["", "a.b", "a b", &"x".repeat(33), "ünï"] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
