//! Who is asking: HTTP basic auth against the broker's users, and what their tags and
//! permissions let them see and change, as RabbitMQ's management plugin decides it
//! (administrator > monitoring > policymaker/management). A vhost's objects show to a user
//! with permissions in it and to administrators; monitors see every vhost only in the vhost
//! list and the overview, and everyone's connections, channels and consumers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use broker::error::reply_code;
use broker::permissions::{Access, AccessCheck, Resource};
use broker::registry::ConnectionInfo;
use broker::users::User;
use broker::vhost::VHost;

use super::error::{ApiError, ApiResult};
use super::State;

/// An authenticated user with a management tag.
pub(crate) struct Caller {
    pub user: User,
}

fn has_tag(user: &User, tags: &[&str]) -> bool {
    user.tags.iter().any(|t| tags.contains(&t.as_str()))
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn is_admin(&self) -> bool {
        has_tag(&self.user, &["administrator"])
    }

    pub fn is_monitor(&self) -> bool {
        has_tag(&self.user, &["administrator", "monitoring"])
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not administrator user"))
        }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::not_authorised("Not monitor user"))
        }
    }

    /// Whether the user may log in to the vhost (has permissions there).
    fn may_enter(&self, state: &State, vhost: &str) -> bool {
        state.broker.permissions.get(vhost, self.name()).is_some()
    }

    /// Whether the user may read and act on the vhost's objects: administrators everywhere,
    /// others (monitors too) where they have permissions.
    fn may_access(&self, state: &State, vhost: &str) -> bool {
        self.is_admin() || self.may_enter(state, vhost)
    }

    /// The vhosts `/api/vhosts` lists and the overview counts: monitors see every one.
    pub fn visible_vhosts(&self, state: &State) -> Vec<Arc<VHost>> {
        vhosts_where(state, |vhost| {
            self.is_monitor() || self.may_enter(state, vhost)
        })
    }

    /// The vhosts whose queues, exchanges and bindings the unscoped listings show: RabbitMQ
    /// filters those by access, so a monitor sees only the vhosts it has permissions in.
    pub fn accessible_vhosts(&self, state: &State) -> Vec<Arc<VHost>> {
        vhosts_where(state, |vhost| self.may_access(state, vhost))
    }

    /// A vhost the user may act in (administrators everywhere); 404 if there is none.
    pub fn vhost(&self, state: &State, name: &str) -> ApiResult<Arc<VHost>> {
        let vhost = existing_vhost(state, name)?;
        if self.may_access(state, name) {
            Ok(vhost)
        } else {
            Err(ApiError::not_authorised(
                "User not authorised to access virtual host",
            ))
        }
    }

    /// Checks the user's AMQP permissions for an operation on a resource, as RabbitMQ does
    /// for what the management API does on the user's behalf.
    pub fn check(
        &self,
        state: &State,
        vhost: &str,
        access: Access,
        resource: Resource,
        name: &str,
    ) -> ApiResult<()> {
        let mut check = AccessCheck::open(state.broker.permissions.clone(), self.name(), vhost)
            .map_err(|e| match e.reply_code {
                reply_code::NOT_ALLOWED => ApiError::not_authorised(&e.reply_text),
                _ => ApiError::from_amqp(e),
            })?;
        check
            .check(access, resource, name)
            .map_err(ApiError::from_amqp)
    }

    /// Connections, channels and consumers: monitors see everyone's, others only their own.
    pub fn sees_connection(&self, connection: &ConnectionInfo) -> bool {
        self.is_monitor() || connection.user().as_deref() == Some(self.name())
    }
}

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Caller, ApiError> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return Err(ApiError::credentials_required());
        };
        let (name, password) = header
            .to_str()
            .ok()
            .and_then(parse_basic)
            .ok_or_else(ApiError::login_failed)?;
        let user = state
            .broker
            .users
            .authenticate(&name, &password, true)
            .ok_or_else(ApiError::login_failed)?;
        let from_loopback = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .is_some_and(|peer| peer.0.ip().is_loopback());
        if user.loopback_only && !from_loopback {
            return Err(ApiError::not_authorised(
                "User can only log in via localhost",
            ));
        }
        if !has_tag(
            &user,
            &["administrator", "monitoring", "policymaker", "management"],
        ) {
            return Err(ApiError::not_authorised("Not management user"));
        }
        Ok(Caller { user })
    }
}

/// A vhost by name, 404 if there is none, for the endpoints RabbitMQ opens to every
/// management user whatever their permissions there.
pub(crate) fn existing_vhost(state: &State, name: &str) -> ApiResult<Arc<VHost>> {
    state.broker.vhost(name).ok_or_else(ApiError::not_found)
}

/// The vhosts `keep` accepts, sorted by name.
fn vhosts_where(state: &State, keep: impl Fn(&str) -> bool) -> Vec<Arc<VHost>> {
    let mut vhosts: Vec<Arc<VHost>> = state
        .broker
        .vhosts()
        .into_iter()
        .filter(|v| keep(v.name()))
        .collect();
    vhosts.sort_by(|a, b| a.name().cmp(b.name()));
    vhosts
}

/// `Basic base64(user:password)`; the password may contain colons, the user may not.
fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::parse_basic;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // "guest:gu:est"
        assert_eq!(
            parse_basic("Basic Z3Vlc3Q6Z3U6ZXN0"),
            Some(("guest".into(), "gu:est".into()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }
}
