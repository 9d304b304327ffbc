//! Who may do what in which vhost: RabbitMQ's configure/write/read regular expressions per user
//! and vhost, checked against resource names with RabbitMQ's refusal texts. Knows nothing of
//! channels: the server asks before it acts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use regex::Regex;

use crate::error::{AmqpException, AmqpResult};

/// The three kinds of access RabbitMQ distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create or delete the resource (declare, delete).
    Configure,
    /// Put messages in (publish to an exchange, bind a destination).
    Write,
    /// Take messages out (consume, get, purge, bind from a source exchange).
    Read,
}

/// What a permission names: the names in refusal texts say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Queue,
    Exchange,
}

impl Resource {
    fn as_str(self) -> &'static str {
        match self {
            Resource::Queue => "queue",
            Resource::Exchange => "exchange",
        }
    }
}

/// One user's access to one vhost, as written (`configure`, `write`, `read` patterns).
#[derive(Debug, Clone)]
pub struct Permission {
    pub configure: String,
    pub write: String,
    pub read: String,
    compiled: [Option<Regex>; 3],
}

/// A pattern RabbitMQ would refuse to store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid regular expression '{pattern}': {reason}")]
pub struct InvalidPattern {
    pub pattern: String,
    pub reason: String,
}

impl Permission {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, InvalidPattern> {
        Ok(Permission {
            compiled: [compile(configure)?, compile(write)?, compile(read)?],
            configure: configure.to_string(),
            write: write.to_string(),
            read: read.to_string(),
        })
    }

    /// Full access, what RabbitMQ gives the default user on the default vhost.
    pub fn full() -> Permission {
        Permission::new(".*", ".*", ".*").expect("a valid pattern")
    }

    /// Like RabbitMQ, an empty pattern allows nothing; any other matches anywhere in the name
    /// unless anchored.
    pub fn allows(&self, access: Access, name: &str) -> bool {
        let index = match access {
            Access::Configure => 0,
            Access::Write => 1,
            Access::Read => 2,
        };
        self.compiled[index]
            .as_ref()
            .is_some_and(|pattern| pattern.is_match(name))
    }
}

fn compile(pattern: &str) -> Result<Option<Regex>, InvalidPattern> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern)
        .map(Some)
        .map_err(|error| InvalidPattern {
            pattern: pattern.to_string(),
            reason: error.to_string(),
        })
}

/// Every user's permissions in every vhost.
#[derive(Default)]
pub struct Permissions {
    by_vhost_and_user: RwLock<HashMap<(String, String), Arc<Permission>>>,
    /// Counts changes, so that a connection's `AccessCheck` knows when to look again.
    generation: AtomicU64,
}

impl Permissions {
    pub fn set(&self, vhost: &str, user: &str, permission: Permission) {
        self.by_vhost_and_user
            .write()
            .insert((vhost.to_string(), user.to_string()), Arc::new(permission));
        self.changed();
    }

    /// Whether there was anything to clear.
    pub fn clear(&self, vhost: &str, user: &str) -> bool {
        let removed = self
            .by_vhost_and_user
            .write()
            .remove(&(vhost.to_string(), user.to_string()))
            .is_some();
        self.changed();
        removed
    }

    /// Drops every permission of a deleted user or vhost.
    pub fn clear_where(&self, mut matches: impl FnMut(&str, &str) -> bool) {
        self.by_vhost_and_user
            .write()
            .retain(|(vhost, user), _| !matches(vhost, user));
        self.changed();
    }

    pub fn replace_all(&self, entries: impl IntoIterator<Item = (String, String, Permission)>) {
        let mut map = self.by_vhost_and_user.write();
        map.clear();
        for (vhost, user, permission) in entries {
            map.insert((vhost, user), Arc::new(permission));
        }
        drop(map);
        self.changed();
    }

    pub fn get(&self, vhost: &str, user: &str) -> Option<Arc<Permission>> {
        self.by_vhost_and_user
            .read()
            .get(&(vhost.to_string(), user.to_string()))
            .cloned()
    }

    /// Every entry as (vhost, user, permission), sorted by vhost then user.
    pub fn all(&self) -> Vec<(String, String, Arc<Permission>)> {
        let mut entries: Vec<_> = self
            .by_vhost_and_user
            .read()
            .iter()
            .map(|((vhost, user), permission)| (vhost.clone(), user.clone(), permission.clone()))
            .collect();
        entries.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        entries
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// One connection's view of its user's permissions in its vhost, re-read only when they
/// change, with the exchange it last published to remembered, so that a stream of publishes
/// costs one atomic load each instead of a pattern match.
pub struct AccessCheck {
    permissions: Arc<Permissions>,
    user: String,
    vhost: String,
    generation: u64,
    permission: Option<Arc<Permission>>,
    last_publish_exchange: Option<amqp::ShortStr>,
}

impl AccessCheck {
    /// The check for `user` in `vhost`; refused (530, as connection.open answers) when the
    /// user has no permissions there at all.
    pub fn open(permissions: Arc<Permissions>, user: &str, vhost: &str) -> AmqpResult<AccessCheck> {
        let generation = permissions.generation();
        let permission = permissions.get(vhost, user);
        if permission.is_none() {
            return Err(AmqpException::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )));
        }
        Ok(AccessCheck {
            permissions,
            user: user.to_string(),
            vhost: vhost.to_string(),
            generation,
            permission,
            last_publish_exchange: None,
        })
    }

    fn refresh(&mut self) {
        let generation = self.permissions.generation();
        if generation != self.generation {
            self.generation = generation;
            self.permission = self.permissions.get(&self.vhost, &self.user);
            self.last_publish_exchange = None;
        }
    }

    /// Refuses with 403 ACCESS_REFUSED in RabbitMQ's words unless `access` to the named
    /// resource is allowed. The default exchange is checked as `amq.default`, as in RabbitMQ.
    pub fn check(&mut self, access: Access, resource: Resource, name: &str) -> AmqpResult<()> {
        self.refresh();
        let checked_name = match (resource, name) {
            (Resource::Exchange, "") => "amq.default",
            _ => name,
        };
        let allowed = self
            .permission
            .as_ref()
            .is_some_and(|permission| permission.allows(access, checked_name));
        if allowed {
            Ok(())
        } else {
            Err(AmqpException::access_refused(format!(
                "access to {} '{checked_name}' in vhost '{}' refused for user '{}'",
                resource.as_str(),
                self.vhost,
                self.user
            )))
        }
    }

    /// `check` of write access to a publish's exchange, remembered while permissions stay.
    pub fn check_publish(&mut self, exchange: &amqp::ShortStr) -> AmqpResult<()> {
        self.refresh();
        if self.last_publish_exchange.as_ref() == Some(exchange) {
            return Ok(());
        }
        self.check(Access::Write, Resource::Exchange, exchange.as_str())?;
        self.last_publish_exchange = Some(exchange.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::reply_code;

    fn check_for(configure: &str, write: &str, read: &str) -> AccessCheck {
        let permissions = Arc::new(Permissions::default());
        permissions.set(
            "v1",
            "alice",
            Permission::new(configure, write, read).unwrap(),
        );
        AccessCheck::open(permissions, "alice", "v1").unwrap()
    }

    #[test]
    fn a_user_without_permissions_in_a_vhost_may_not_open_it() {
        let permissions = Arc::new(Permissions::default());
        permissions.set("/", "alice", Permission::full());
        let error = AccessCheck::open(permissions, "alice", "v1").err().unwrap();
        assert_eq!(error.reply_code, reply_code::NOT_ALLOWED);
        assert_eq!(
            error.reply_text,
            "NOT_ALLOWED - access to vhost 'v1' refused for user 'alice'"
        );
    }

    #[test]
    fn patterns_match_anywhere_unless_anchored_and_empty_allows_nothing() {
        let mut check = check_for("^a", "b", "");
        assert!(check
            .check(Access::Configure, Resource::Queue, "abc")
            .is_ok());
        assert!(check
            .check(Access::Configure, Resource::Queue, "cab")
            .is_err());
        assert!(check.check(Access::Write, Resource::Queue, "cab").is_ok());
        let error = check.check(Access::Read, Resource::Queue, "").unwrap_err();
        assert_eq!(error.reply_code, reply_code::ACCESS_REFUSED);
        assert_eq!(
            error.reply_text,
            "ACCESS_REFUSED - access to queue '' in vhost 'v1' refused for user 'alice'"
        );
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let mut check = check_for("", "^amq\\.default$", "");
        assert!(check
            .check_publish(&amqp::ShortStr::from_static(""))
            .is_ok());
        let error = check
            .check_publish(&amqp::ShortStr::from_static("amq.direct"))
            .unwrap_err();
        assert_eq!(
            error.reply_text,
            "ACCESS_REFUSED - access to exchange 'amq.direct' in vhost 'v1' refused for user 'alice'"
        );
    }

    #[test]
    fn a_change_of_permissions_reaches_open_connections() {
        let permissions = Arc::new(Permissions::default());
        permissions.set("v1", "alice", Permission::full());
        let mut check = AccessCheck::open(permissions.clone(), "alice", "v1").unwrap();
        let exchange = amqp::ShortStr::from_static("x");
        assert!(check.check_publish(&exchange).is_ok());
        permissions.set("v1", "alice", Permission::new(".*", "", ".*").unwrap());
        assert!(check.check_publish(&exchange).is_err());
        permissions.clear("v1", "alice");
        assert!(check.check(Access::Read, Resource::Queue, "q").is_err());
    }

    #[test]
    fn an_invalid_pattern_is_refused() {
        assert!(Permission::new("(", ".*", ".*").is_err());
    }
}
