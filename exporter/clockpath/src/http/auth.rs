//! Basic authentication against the web config's bcrypt hashes, as exporter-toolkit does it,
//! with two of its weaknesses closed:
//! - an unknown user is checked against a dummy hash **of the configured users' cost** (the
//!   highest one), so the time of a wrong answer does not tell which user names exist (a
//!   fixed cost-10 dummy against cost-12 users answered unknown names 3× faster). Users of
//!   mixed costs are still told apart by their own cost: give them one.
//! - only *successes* are cached, keyed by a SHA-256 of (user, hash, password): a client
//!   without credentials cannot fill the cache (it stores 32 bytes a key, at most
//!   [`CACHE_ENTRIES`]), and a scraper's repeated credentials skip bcrypt (tens of ms of CPU).
//!
//! bcrypt runs off the async workers, one at a time.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use base64::Engine as _;

/// The password behind every dummy hash (never a user's: it is checked only for unknown users).
const DUMMY_PASSWORD: &str = "clockpath-dummy-password";
/// Cached successes kept at most (the toolkit's figure).
const CACHE_ENTRIES: usize = 100;

type Digest = [u8; 32];

/// Checks `Authorization: Basic …` headers.
#[derive(Debug, Default)]
pub struct BasicAuth {
    /// Digests of credentials that were right.
    cache: Mutex<HashSet<Digest>>,
    /// cost → a dummy hash of that cost, made once.
    dummies: Mutex<HashMap<u32, String>>,
    /// One bcrypt at a time: a burst of wrong passwords costs one core, not all of them.
    bcrypt: tokio::sync::Mutex<()>,
}

fn digest(user: &str, hash: &str, password: &str) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, hash, password] {
        // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part.as_bytes());
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The highest bcrypt cost among `users` (10, bcrypt's default, when none parses).
fn cost_of(users: &BTreeMap<String, String>) -> u32 {
    users.values().filter_map(|h| h.parse::<bcrypt::HashParts>().ok()).map(|p| p.get_cost()).max().unwrap_or(10)
}

impl BasicAuth {
    /// A dummy hash of `cost`, made on first use (off the async workers: it costs a bcrypt).
    async fn dummy(self: &Arc<Self>, cost: u32) -> String {
        if let Some(h) = self.dummies.lock().ok().and_then(|d| d.get(&cost).cloned()) {
            return h;
        }
        let made = tokio::task::spawn_blocking(move || bcrypt::hash(DUMMY_PASSWORD, cost).ok())
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Ok(mut d) = self.dummies.lock() {
            d.insert(cost, made.clone());
        }
        made
    }

    /// Whether the header's credentials are one of `users`' (user → bcrypt hash).
    pub async fn check(self: &Arc<Self>, users: &BTreeMap<String, String>, header: Option<&str>) -> bool {
        let Some((user, password)) = header.and_then(credentials) else { return false };
        let (hash, known) = match users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy(cost_of(users)).await, false),
        };
        let key = digest(&user, &hash, &password);
        if known && self.cache.lock().is_ok_and(|c| c.contains(&key)) {
            return true;
        }
        let _one = self.bcrypt.lock().await;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok
            && known
            && let Ok(mut c) = self.cache.lock()
        {
            if c.len() >= CACHE_ENTRIES
                && let Some(k) = c.iter().next().copied()
            {
                // HashSet iteration order is randomised per process: a random eviction.
                c.remove(&k);
            }
            c.insert(key);
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
        assert_eq!(auth.cache.lock().expect("cache").len(), 1, "only the success is cached");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn wrong_answers_for_unknown_users_take_a_bcrypt_of_the_users_cost() {
        let users: BTreeMap<String, String> = [("alice".to_string(), bcrypt::hash("pw", 12).expect("hash"))].into();
        assert_eq!(cost_of(&users), 12);
        let auth = Arc::new(BasicAuth::default());
        // Warm the dummy, then time a wrong password of a known user and an unknown user.
        assert!(!auth.check(&users, Some(&basic("nobody", "x"))).await);
        let time = |user: &'static str| {
            let (auth, users) = (auth.clone(), users.clone());
            async move {
                let t = std::time::Instant::now();
                assert!(!auth.check(&users, Some(&basic(user, "wrong"))).await);
                t.elapsed().as_secs_f64()
            }
        };
        let (known, unknown) = (time("alice").await, time("mallory").await);
        // Cost 12 against the toolkit's cost-10 dummy was 3× apart; the same cost is within 2×.
        assert!(unknown > known / 2.0 && unknown < known * 2.0, "known {known} s, unknown {unknown} s");
        assert_eq!(auth.dummies.lock().expect("dummies").keys().copied().collect::<Vec<_>>(), [12]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn large_wrong_credentials_leave_nothing_behind() {
        let users: BTreeMap<String, String> = [("alice".to_string(), bcrypt::hash("pw", 4).expect("hash"))].into();
        let auth = Arc::new(BasicAuth::default());
        let big = "x".repeat(280 * 1024);
        for i in 0..20 {
            assert!(!auth.check(&users, Some(&basic(&format!("{i}{big}"), &big))).await);
        }
        assert!(auth.cache.lock().expect("cache").is_empty());
        assert!(std::mem::size_of::<Digest>() == 32, "a cached key is 32 bytes whatever the credentials");
    }
}
