//! Users and authentication: who may log in, with what password, from where.

use std::collections::HashMap;

use parking_lot::RwLock;

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    password: String,
    pub tags: Vec<String>,
    /// Like RabbitMQ's `loopback_users`: such a user may connect only from localhost.
    pub loopback_only: bool,
}

#[derive(Default)]
pub struct Users {
    users: RwLock<HashMap<String, User>>,
}

impl Users {
    /// The default user `guest`/`guest`, administrator, allowed from loopback only.
    pub fn with_default_user() -> Self {
        let users = Users::default();
        users.add(User {
            name: "guest".into(),
            password: "guest".into(),
            tags: vec!["administrator".into()],
            loopback_only: true,
        });
        users
    }

    pub fn add(&self, user: User) {
        self.users.write().insert(user.name.clone(), user);
    }

    /// Checks a login; `None` when refused (unknown user, wrong password, or a loopback-only
    /// user from elsewhere). The reason is deliberately not told to the client.
    pub fn authenticate(&self, name: &str, password: &str, from_loopback: bool) -> Option<User> {
        let users = self.users.read();
        let user = users.get(name)?;
        let password_ok = constant_time_eq(user.password.as_bytes(), password.as_bytes());
        (password_ok && (from_loopback || !user.loopback_only)).then(|| user.clone())
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
}
