//! Basic authentication against the web config's bcrypt hashes, as exporter-toolkit does it:
//! an unknown user is checked against a dummy hash (so timing does not tell which users
//! exist), results are cached (bcrypt at cost 10 is tens of ms of CPU; a scraper sends the same
//! credentials every time), and bcrypt runs off the async workers, one at a time.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use base64::Engine as _;

/// The toolkit's dummy hash (of "fakepassword"), compared against for unknown users.
const DUMMY_HASH: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
/// Cached outcomes kept at most (the toolkit's figure).
const CACHE_ENTRIES: usize = 100;

/// Checks `Authorization: Basic …` headers.
#[derive(Debug, Default)]
pub struct BasicAuth {
    cache: Mutex<HashMap<(String, String, String), bool>>,
    /// One bcrypt at a time: a burst of wrong passwords costs one core, not all of them.
    bcrypt: tokio::sync::Mutex<()>,
}

impl BasicAuth {
    /// Whether the header's credentials are one of `users`' (user → bcrypt hash).
    pub async fn check(self: &Arc<Self>, users: &BTreeMap<String, String>, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(credentials) else { return false };
        let (hash, known) = match users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (DUMMY_HASH.to_string(), false),
        };
        let key = (user, hash.clone(), password.clone());
        if let Some(ok) = self.cache.lock().ok().and_then(|c| c.get(&key).copied()) {
            return ok && known;
        }
        let _one = self.bcrypt.lock().await;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_ENTRIES
                && let Some(k) = c.keys().next().cloned()
            {
                // HashMap iteration order is randomised per process: a random eviction.
                c.remove(&k);
            }
            c.insert(key, ok);
        }
        ok && known
    }
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(header: &str) -> Option<(String, String)> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn right_wrong_unknown_and_malformed_credentials() {
        let users: BTreeMap<String, String> =
            [("alice".to_string(), bcrypt::hash("s3cret:with colon", 4).expect("hash"))].into();
        let auth = Arc::new(BasicAuth::default());
        assert!(auth.check(&users, Some(&basic("alice", "s3cret:with colon"))).await);
        // Cached, and still right.
        assert!(auth.check(&users, Some(&basic("alice", "s3cret:with colon"))).await);
        assert!(!auth.check(&users, Some(&basic("alice", "wrong"))).await);
        assert!(!auth.check(&users, Some(&basic("mallory", "fakepassword"))).await, "the dummy hash admits no one");
        assert!(!auth.check(&users, None).await);
        assert!(!auth.check(&users, Some("Bearer abc")).await);
        assert!(!auth.check(&users, Some("Basic !!!")).await);
        for i in 0..(CACHE_ENTRIES + 5) {
            assert!(!auth.check(&users, Some(&basic("alice", &format!("guess{i}")))).await);
        }
        assert!(auth.cache.lock().expect("cache").len() <= CACHE_ENTRIES);
    }
}
