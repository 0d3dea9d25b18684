//! Who may send events. Two checks, each optional, both applied when both are configured:
//!
//! - a bearer token (`Authorization: Bearer TOKEN`), given as a flag or read from a file (a
//!   mounted Secret) that is read again when it changes, so a rotated token takes effect
//!   without a restart;
//! - an HMAC-SHA256 signature over the request (the webhook convention): the sender signs
//!   `TIMESTAMP.BODY` with a shared secret (from a file, read again when it changes) and sends
//!   `x-signature-timestamp: TIMESTAMP` (Unix seconds) and `x-signature-256: sha256=HEX`. A
//!   signature is accepted once, within the replay window around its timestamp.
//!
//! Comparisons take the same time whatever matches, so secrets cannot be guessed from timing.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;

pub use crate::secret_file::{SecretFile, SecretFileError};

/// The header carrying the signature, `sha256=HEX`.
pub const SIGNATURE_HEADER: &str = "x-signature-256";
/// The header carrying the signed timestamp, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// The most signatures remembered for replay detection; the oldest are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing or wrong bearer token")]
    Token,
    #[error("missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER} header")]
    MissingSignature,
    #[error("{0}")]
    MalformedSignature(String),
    #[error("the signature does not match the body")]
    WrongSignature,
    #[error(
        "the signature's timestamp is {age} s away from now, outside the window of {window} s \
         (sign each delivery when it is sent)"
    )]
    Expired { age: u64, window: u64 },
    #[error("the signature was already used (sign each delivery anew)")]
    Replayed,
    #[error(transparent)]
    Unreadable(#[from] SecretFileError),
}

/// A secret given directly, or kept in a file and read again when the file changes.
pub enum Secret {
    Value(String),
    File(SecretFile),
}

impl Secret {
    /// The secret as of now (borrowed when given directly: no copy per request).
    fn current(&self) -> Result<Cow<'_, str>, AuthError> {
        match self {
            Secret::Value(value) => Ok(Cow::Borrowed(value)),
            Secret::File(file) => Ok(Cow::Owned(file.current()?)),
        }
    }
}

/// The HMAC check: the shared secret, the window, and the signatures already used.
pub struct Signatures {
    secret: Secret,
    window: Duration,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    order: VecDeque<(u64, Vec<u8>)>,
    set: HashSet<Vec<u8>>,
}

impl Signatures {
    pub fn new(secret: Secret, window: Duration) -> Signatures {
        Signatures {
            secret,
            window,
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Checks the request's signature over `body` at `now` (Unix seconds), and remembers it: it
    /// is spent, unless given back with [`Signatures::give_back`].
    pub fn check(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Spent, AuthError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(signature), Some(timestamp)) =
            (header(SIGNATURE_HEADER), header(TIMESTAMP_HEADER))
        else {
            return Err(AuthError::MissingSignature);
        };
        let secret = self.secret.current()?;
        let window = self.window.as_secs();
        let signature =
            verify_signature(secret.as_bytes(), timestamp, body, signature, now, window)?;
        let stamp = timestamp.trim().parse::<u64>().unwrap_or_default();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what is outside the window (it would be refused as expired anyway), and the
        // oldest beyond the bound.
        while let Some((at, _)) = seen.order.front() {
            if now.saturating_sub(*at) <= window && seen.order.len() < MAX_REMEMBERED {
                break;
            }
            if let Some((_, old)) = seen.order.pop_front() {
                seen.set.remove(&old);
            }
        }
        if !seen.set.insert(signature.clone()) {
            return Err(AuthError::Replayed);
        }
        seen.order.push_back((stamp, signature.clone()));
        Ok(Spent(signature))
    }

    /// Forgets a signature [`Signatures::check`] spent: its request was not taken, and the
    /// same request may come again.
    pub fn give_back(&self, spent: Spent) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.set.remove(&spent.0)
            && let Some(at) = seen.order.iter().rposition(|(_, s)| *s == spent.0)
        {
            seen.order.remove(at);
        }
    }
}

/// A signature a request spent.
#[derive(Debug, PartialEq, Eq)]
pub struct Spent(Vec<u8>);

/// Verifies `header` (`sha256=HEX`) as the HMAC-SHA256 of `TIMESTAMP.BODY` under `secret`, with
/// the timestamp at most `window` seconds from `now`. Returns the signature's bytes.
pub fn verify_signature(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    header: &str,
    now: u64,
    window: u64,
) -> Result<Vec<u8>, AuthError> {
    let stamp: u64 = timestamp.trim().parse().map_err(|_| {
        AuthError::MalformedSignature(format!(
            "{TIMESTAMP_HEADER} must be Unix seconds, found {timestamp:?}"
        ))
    })?;
    let age = now.abs_diff(stamp);
    if age > window {
        return Err(AuthError::Expired { age, window });
    }
    let hex = header.trim().strip_prefix("sha256=").ok_or_else(|| {
        AuthError::MalformedSignature(format!("{SIGNATURE_HEADER} must be sha256=HEX"))
    })?;
    let given = decode_hex(hex).ok_or_else(|| {
        AuthError::MalformedSignature(format!("{SIGNATURE_HEADER} is not 64 hex digits"))
    })?;
    let mut mac = signer(secret, stamp);
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| AuthError::WrongSignature)?;
    Ok(given)
}

/// The signature a sender sends for `body` at `timestamp`: `sha256=HEX` (for senders' tools
/// and tests).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = signer(secret, timestamp);
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn signer(secret: &[u8], timestamp: u64) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// Compares without an early exit, so the token cannot be guessed byte by byte from timing.
pub fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `Authorization: Bearer TOKEN`; the scheme is case-insensitive (RFC 7235, section 2.1). The
/// token is compared without blanks around it, on both sides: HTTP drops them from a header's
/// value, so a token file with a blank at its end refused every sender.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let token = token.trim();
    !token.is_empty()
        && headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, given)| same_token(given.trim().as_bytes(), token.as_bytes()))
}

/// The token check, against the token as of now.
pub fn check_token(headers: &HeaderMap, token: &Secret) -> Result<(), AuthError> {
    let token = token.current()?;
    if bearer_matches(headers, &token) {
        Ok(())
    } else {
        Err(AuthError::Token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"webhook-secret";
    const NOW: u64 = 1_800_000_000;

    fn headers(signature: &str, timestamp: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(SIGNATURE_HEADER, signature.parse().unwrap());
        map.insert(TIMESTAMP_HEADER, timestamp.parse().unwrap());
        map
    }

    #[test]
    fn a_signature_is_checked_against_body_secret_and_time() {
        let body = br#"{"id":"1"}"#;
        let good = sign(SECRET, NOW, body);
        assert!(verify_signature(SECRET, &NOW.to_string(), body, &good, NOW + 10, 300).is_ok());
        // Another body, another secret, another timestamp: wrong.
        assert_eq!(
            verify_signature(SECRET, &NOW.to_string(), b"{}", &good, NOW, 300),
            Err(AuthError::WrongSignature)
        );
        assert_eq!(
            verify_signature(b"other", &NOW.to_string(), body, &good, NOW, 300),
            Err(AuthError::WrongSignature)
        );
        assert_eq!(
            verify_signature(SECRET, &(NOW - 1).to_string(), body, &good, NOW, 300),
            Err(AuthError::WrongSignature)
        );
        // Outside the window, either side.
        assert_eq!(
            verify_signature(SECRET, &NOW.to_string(), body, &good, NOW + 301, 300),
            Err(AuthError::Expired {
                age: 301,
                window: 300
            })
        );
        assert!(matches!(
            verify_signature(SECRET, &NOW.to_string(), body, &good, NOW - 400, 300),
            Err(AuthError::Expired { age: 400, .. })
        ));
        // Malformed.
        for (timestamp, header) in [
            ("soon", good.as_str()),
            (&*NOW.to_string(), "md5=abc"),
            (&*NOW.to_string(), "sha256=zz"),
            (&*NOW.to_string(), "sha256=ab"),
        ] {
            assert!(
                matches!(
                    verify_signature(SECRET, timestamp, body, header, NOW, 300),
                    Err(AuthError::MalformedSignature(_))
                ),
                "{timestamp} {header}"
            );
        }
    }

    #[test]
    fn a_signature_is_accepted_once() {
        let signatures = Signatures::new(
            Secret::Value(String::from_utf8_lossy(SECRET).into_owned()),
            Duration::from_secs(300),
        );
        let body = b"event";
        let good = headers(&sign(SECRET, NOW, body), &NOW.to_string());
        let spent = signatures.check(&good, body, NOW).unwrap();
        assert_eq!(
            signatures.check(&good, body, NOW + 1),
            Err(AuthError::Replayed)
        );
        // Given back (its request was not taken), it may come again, once.
        signatures.give_back(spent);
        assert!(signatures.check(&good, body, NOW + 1).is_ok());
        assert_eq!(
            signatures.check(&good, body, NOW + 1),
            Err(AuthError::Replayed)
        );
        // A new signature of the same body (a retry, signed anew) is accepted.
        let again = headers(&sign(SECRET, NOW + 2, body), &(NOW + 2).to_string());
        assert!(signatures.check(&again, body, NOW + 2).is_ok());
        assert_eq!(
            signatures.check(&HeaderMap::new(), body, NOW),
            Err(AuthError::MissingSignature)
        );
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token(b"secret", b"secret"));
        assert!(!same_token(b"secreT", b"secret"));
        assert!(!same_token(b"secret-longer", b"secret"));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer secret".parse().unwrap(),
        );
        assert!(bearer_matches(&headers, "secret"));
        for scheme in ["bearer", "BEARER", "bEaReR"] {
            headers.insert(
                http::header::AUTHORIZATION,
                format!("{scheme} secret").parse().unwrap(),
            );
            assert!(bearer_matches(&headers, "secret"), "{scheme}");
        }
        for wrong in ["Bearer wrong", "Basic secret", "Bearersecret"] {
            headers.insert(http::header::AUTHORIZATION, wrong.parse().unwrap());
            assert!(!bearer_matches(&headers, "secret"), "{wrong}");
        }
        // A token with blanks around it (a file written by hand) is the token without them;
        // one of blanks only is none, and matches nothing.
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer secret".parse().unwrap(),
        );
        assert!(bearer_matches(&headers, " secret \t"));
        headers.insert(http::header::AUTHORIZATION, "Bearer ".parse().unwrap());
        assert!(!bearer_matches(&headers, "  "));
    }
}
