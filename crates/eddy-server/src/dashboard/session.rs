//! Dashboard sign-in: a signed session cookie, its CSRF token, and sign-out.
//!
//! The cookie is `EXPIRES.NONCE.MAC`, HMAC-SHA-256 under a key derived from the admin token,
//! so any eddy holding the same token accepts it and changing the token signs everyone out.
//! A form's CSRF token is a second MAC of the nonce: a page can only post what it was served.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "eddy_session";

/// A valid session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Random, unique to the sign-in.
    pub nonce: String,
    /// When it ends, UTC seconds.
    pub expires: i64,
    /// The token forms of this session carry.
    pub csrf: String,
}

/// The signing key, the sessions' lifetime, and the sessions signed out before their end.
pub struct Sessions {
    key: [u8; 32],
    lifetime: Duration,
    /// Sign-outs this process saw (the store has every node's, across restarts).
    signed_out: Mutex<HashMap<String, i64>>,
    /// Where sign-outs are kept, so that they hold after a restart and on every node.
    store: Option<eddy_store::Store>,
    /// Cookies are `Secure` (eddy's public URL is https).
    secure: bool,
}

/// The kind under which sign-outs are stored (process-wide objects), by session nonce.
const SIGNED_OUT: &str = "dashboard-sign-out";

fn now_seconds() -> i64 {
    eddy_model::time::now_ms() / 1000
}

impl Sessions {
    /// Sessions signed with a key derived from the admin token.
    pub fn new(admin_token: &str, lifetime: Duration) -> Sessions {
        let mut hasher = Sha256::new();
        hasher.update(b"eddy dashboard sessions\0");
        hasher.update(admin_token.as_bytes());
        Sessions {
            key: hasher.finalize().into(),
            lifetime,
            signed_out: Mutex::new(HashMap::new()),
            store: None,
            secure: false,
        }
    }

    /// Keeps sign-outs in `store`, so that every node and every later start honours them.
    pub fn remembered_in(mut self, store: eddy_store::Store) -> Sessions {
        self.store = Some(store);
        self
    }

    /// Marks cookies `Secure`, for an eddy reached over https.
    pub fn secure(mut self, secure: bool) -> Sessions {
        self.secure = secure;
        self
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key) else {
            // A 32-byte key always fits HMAC; an empty MAC never verifies.
            return String::new();
        };
        for part in parts {
            mac.update(part);
            mac.update(b"\0");
        }
        hex(&mac.finalize().into_bytes())
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session and its cookie value.
    pub fn issue(&self) -> Result<(Session, String), eddy_store::ids::RandomnessError> {
        let nonce = eddy_store::ids::secret_hex(16)?;
        let expires = now_seconds() + self.lifetime.as_secs() as i64;
        let mac = self.mac(&[b"session", expires.to_string().as_bytes(), nonce.as_bytes()]);
        let cookie = format!("{expires}.{nonce}.{mac}");
        let csrf = self.mac(&[b"csrf", nonce.as_bytes()]);
        Ok((
            Session {
                nonce,
                expires,
                csrf,
            },
            cookie,
        ))
    }

    /// The session a cookie value stands for, when it is genuine, unexpired and not signed out.
    pub fn check(&self, cookie: &str) -> Option<Session> {
        let mut parts = cookie.splitn(3, '.');
        let (expires_text, nonce, mac) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires_text.parse().ok()?;
        let expected = self.mac(&[b"session", expires_text.as_bytes(), nonce.as_bytes()]);
        if !constant_time_eq(expected.as_bytes(), mac.as_bytes()) || expires <= now_seconds() {
            return None;
        }
        let signed_out = match self.signed_out.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if signed_out.contains_key(nonce) {
            return None;
        }
        drop(signed_out);
        if let Some(store) = &self.store {
            // A read error is no proof of a sign-out, nor of its absence: the session is refused.
            match store.object(eddy_store::GLOBAL_OBJECTS, SIGNED_OUT, nonce) {
                Ok(None) => {}
                Ok(Some(_)) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read dashboard sign-outs; session refused");
                    return None;
                }
            }
        }
        Some(Session {
            nonce: nonce.to_string(),
            expires,
            csrf: self.mac(&[b"csrf", nonce.as_bytes()]),
        })
    }

    /// Whether a form's token belongs to the session.
    pub fn csrf_ok(&self, session: &Session, presented: &str) -> bool {
        constant_time_eq(session.csrf.as_bytes(), presented.as_bytes())
    }

    /// Ends a session before its time, here and in the store; forgotten once it would have
    /// expired anyway.
    pub async fn sign_out(&self, session: &Session) -> Result<(), eddy_store::StoreError> {
        let now = now_seconds();
        {
            let mut signed_out = match self.signed_out.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            signed_out.retain(|_, expires| *expires > now);
            signed_out.insert(session.nonce.clone(), session.expires);
        }
        let Some(store) = &self.store else {
            return Ok(());
        };
        let global = eddy_store::GLOBAL_OBJECTS;
        for (nonce, record) in store.objects(global, SIGNED_OUT)? {
            if record["expires"].as_i64().is_none_or(|e| e <= now) {
                store.delete_object(global, SIGNED_OUT, nonce).await?;
            }
        }
        store
            .put_object(
                global,
                SIGNED_OUT,
                session.nonce.clone(),
                serde_json::json!({"expires": session.expires}),
            )
            .await
    }

    /// The `Set-Cookie` value that signs a browser in.
    pub fn set_cookie(&self, value: &str) -> String {
        format!(
            "{COOKIE}={value}; Path=/dashboard; Max-Age={}; HttpOnly; SameSite=Strict{}",
            self.lifetime.as_secs(),
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// The `Set-Cookie` value that signs a browser out.
    pub fn clear_cookie(&self) -> String {
        format!(
            "{COOKIE}=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict{}",
            if self.secure { "; Secure" } else { "" }
        )
    }

    /// Whether `token` is the admin token (compared by hash, in constant time).
    pub fn token_ok(admin_token_hash: &str, token: &str) -> bool {
        let presented = eddy_store::ids::sha256_hex(token.trim());
        constant_time_eq(presented.as_bytes(), admin_token_hash.as_bytes())
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session cookie's value among a request's cookies.
pub fn cookie_of(headers: &axum::http::HeaderMap) -> Option<String> {
    for value in headers.get_all(axum::http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == COOKIE
            {
                return Some(value.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_genuine_until_signed_out() {
        let sessions = Sessions::new("token", Duration::from_secs(60));
        let (session, cookie) = sessions.issue().unwrap();
        let back = sessions.check(&cookie).expect("valid");
        assert_eq!(back.nonce, session.nonce);
        assert!(sessions.csrf_ok(&back, &session.csrf));
        assert!(!sessions.csrf_ok(&back, "nope"));
        // Another token's sessions, and tampered cookies, are refused.
        assert!(
            Sessions::new("other", Duration::from_secs(60))
                .check(&cookie)
                .is_none()
        );
        let (expires, rest) = cookie.split_once('.').unwrap();
        let later: i64 = expires.parse::<i64>().unwrap() + 3600;
        assert!(sessions.check(&format!("{later}.{rest}")).is_none());
        assert!(sessions.check("garbage").is_none());
        futures_executor_block_on(sessions.sign_out(&back)).expect("signed out");
        assert!(sessions.check(&cookie).is_none());
    }

    /// Runs a future that needs no runtime (a sign-out without a store).
    fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn cookies_are_secure_behind_https() {
        let sessions = Sessions::new("token", Duration::from_secs(60)).secure(true);
        assert!(sessions.set_cookie("v").ends_with("; Secure"));
        assert!(sessions.clear_cookie().ends_with("; Secure"));
        let plain = Sessions::new("token", Duration::from_secs(60));
        assert!(!plain.set_cookie("v").contains("Secure"));
    }

    #[test]
    fn an_expired_cookie_is_refused() {
        let sessions = Sessions::new("token", Duration::from_secs(0));
        let (_, cookie) = sessions.issue().unwrap();
        assert!(sessions.check(&cookie).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            "a=1; eddy_session=x.y.z; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_of(&headers).as_deref(), Some("x.y.z"));
    }
}
