//! Users and authentication: who may log in, with what password, from where. Passwords are
//! kept only as RabbitMQ's salted SHA-256 hashes, so definitions move between the two brokers.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use parking_lot::RwLock;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The only hashing algorithm Warren writes (and RabbitMQ's default).
pub const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";
const SALT_BYTES: usize = 4;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// base64(salt ‖ SHA-256(salt ‖ password)), RabbitMQ's `password_hash`.
    pub password_hash: String,
    pub tags: Vec<String>,
    /// Like RabbitMQ's `loopback_users`: such a user may connect only from localhost.
    pub loopback_only: bool,
}

impl User {
    pub fn with_password(name: &str, password: &str, tags: Vec<String>) -> User {
        let mut salt = [0u8; SALT_BYTES];
        rand::thread_rng().fill_bytes(&mut salt);
        User {
            name: name.to_string(),
            password_hash: hash_password(&salt, password),
            tags,
            loopback_only: false,
        }
    }

    /// Checks a password against the stored hash (an empty hash never matches, as in
    /// RabbitMQ, where such users may only use other mechanisms).
    pub fn password_matches(&self, password: &str) -> bool {
        let Ok(stored) = BASE64.decode(&self.password_hash) else {
            return false;
        };
        if stored.len() <= SALT_BYTES {
            return false;
        }
        let (salt, _) = stored.split_at(SALT_BYTES);
        let candidate = BASE64
            .decode(hash_password(salt, password))
            .unwrap_or_default();
        constant_time_eq(&stored, &candidate)
    }
}

fn hash_password(salt: &[u8], password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut salted = salt.to_vec();
    salted.extend_from_slice(&hasher.finalize());
    BASE64.encode(salted)
}

#[derive(Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
}

impl Users {
    /// The default user `guest`/`guest`, administrator, allowed from loopback only.
    pub fn with_default_user() -> Self {
        let users = Users::default();
        let mut guest = User::with_password("guest", "guest", vec!["administrator".into()]);
        guest.loopback_only = true;
        users.add(guest);
        users
    }

    /// Replaces every user (definitions restored at startup or imported).
    pub fn replace_all(&self, users: impl IntoIterator<Item = User>) {
        let mut map = self.users.write();
        map.clear();
        for user in users {
            map.insert(user.name.clone(), user);
        }
    }

    pub fn add(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
    }

    pub fn get(&self, name: &str) -> Option<User> {
        self.users.read().get(name).cloned()
    }

    /// Whether the user existed.
    pub fn remove(&self, name: &str) -> bool {
        self.users.write().remove(name).is_some()
    }

    pub fn all(&self) -> Vec<User> {
        let mut users: Vec<User> = self.users.read().values().cloned().collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    /// Checks a login; `None` when refused (unknown user, wrong password, or a loopback-only
    /// user from elsewhere). The reason is deliberately not told to the client.
    pub fn authenticate(&self, name: &str, password: &str, from_loopback: bool) -> Option<User> {
        let users = self.users.read();
        let user = users.get(name)?;
        (user.password_matches(password) && (from_loopback || !user.loopback_only))
            .then(|| user.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_only_from_loopback_with_right_password() {
        let users = Users::with_default_user();
        assert!(users.authenticate("guest", "guest", true).is_some());
        assert!(users.authenticate("guest", "guest", false).is_none());
        assert!(users.authenticate("guest", "wrong", true).is_none());
        assert!(users.authenticate("nobody", "guest", true).is_none());
    }

    #[test]
    fn verifies_a_hash_made_by_rabbitmq() {
        // From `rabbitmqctl export_definitions` of RabbitMQ 3.10.8, user guest/guest.
        let user = User {
            name: "guest".into(),
            password_hash: "fbkQ0KuSnf6a+bKhApVzCoVu9wXVYPZ1sLeCVuX3KFu03bZT".into(),
            tags: vec![],
            loopback_only: false,
        };
        assert!(user.password_matches("guest"));
        assert!(!user.password_matches("guest2"));
    }

    #[test]
    fn hashes_are_salted() {
        let a = User::with_password("a", "same", vec![]);
        let b = User::with_password("b", "same", vec![]);
        assert_ne!(a.password_hash, b.password_hash);
        assert!(a.password_matches("same") && b.password_matches("same"));
    }
}
