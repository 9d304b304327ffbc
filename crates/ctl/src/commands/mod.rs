//! Runs one command: the context every command shares (API client, vhost, output options)
//! and the dispatch from the parsed command line to the module that implements it.

mod connections;
mod definitions;
pub mod list;
mod node;
mod policies;
mod queues;
mod users;
mod vhosts;

use std::time::Duration;

use serde_json::Value;

use crate::cli::Command;
use crate::client::{api_path, ApiClient, Endpoint};
use crate::error::CtlError;
use crate::output::{json_object, Output};

/// The default for requests, as rabbitmqctl's list_queues (the one that shows it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Context {
    pub api: ApiClient,
    pub endpoint: Endpoint,
    pub user: String,
    pub password: String,
    pub vhost: String,
    pub out: Output,
    /// --timeout as given; commands that wait (await_startup, stop) have their own default.
    pub timeout: Option<Duration>,
}

impl Context {
    pub fn new(
        endpoint: Endpoint,
        user: String,
        password: String,
        vhost: String,
        out: Output,
        timeout: Option<Duration>,
    ) -> Self {
        let api = ApiClient::new(
            &endpoint,
            &user,
            &password,
            timeout.unwrap_or(DEFAULT_TIMEOUT),
        );
        Context {
            api,
            endpoint,
            user,
            password,
            vhost,
            out,
            timeout,
        }
    }

    /// A client whose requests give up sooner, for polling.
    pub fn client_with_timeout(&self, timeout: Duration) -> ApiClient {
        ApiClient::new(&self.endpoint, &self.user, &self.password, timeout)
    }

    /// The broker's node name, as /api/overview reports it.
    pub fn node_name(&self) -> Result<String, CtlError> {
        let overview = self.api.get(&api_path(&["overview"]))?;
        Ok(overview
            .get("node")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// A command succeeded: the json formatter says so with the node's name, as rabbitmqctl does.
    pub fn done(&self) -> Result<(), CtlError> {
        if self.out.is_json() {
            let node = self.node_name()?;
            self.out.emit(&format!(
                "{}\n",
                json_object(&[("node", Value::from(node)), ("result", Value::from("ok"))])
            ))?;
        }
        Ok(())
    }
}

pub fn run(command: &Command, ctx: &Context) -> Result<(), CtlError> {
    use Command as C;
    match command {
        C::ListQueues(args) => list::queues(ctx, args),
        C::ListExchanges(args) => list::exchanges(ctx, args),
        C::ListBindings(args) => list::bindings(ctx, args),
        C::ListConnections(args) => list::connections(ctx, args),
        C::ListChannels(args) => list::channels(ctx, args),
        C::ListConsumers(args) => list::consumers(ctx, args),
        C::ListUsers(args) => list::users(ctx, args),
        C::ListVhosts(args) => list::vhosts(ctx, args),
        C::ListPermissions(args) => list::permissions(ctx, args),
        C::ListPolicies(args) => list::policies(ctx, args),
        C::AddUser { username, password } => users::add_user(ctx, username, password),
        C::DeleteUser { username } => users::delete_user(ctx, username),
        C::ChangePassword {
            username,
            new_password,
        } => users::change_password(ctx, username, new_password),
        C::SetUserTags { username, tags } => users::set_user_tags(ctx, username, tags),
        C::SetPermissions {
            username,
            conf,
            write,
            read,
        } => users::set_permissions(ctx, username, conf, write, read),
        C::ClearPermissions { username } => users::clear_permissions(ctx, username),
        C::AddVhost {
            vhost,
            description,
            tags,
            default_queue_type,
        } => vhosts::add_vhost(
            ctx,
            vhost,
            description.as_deref(),
            tags.as_deref(),
            default_queue_type.as_deref(),
        ),
        C::DeleteVhost { vhost } => vhosts::delete_vhost(ctx, vhost),
        C::SetPolicy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
        } => policies::set_policy(ctx, name, pattern, definition, *priority, apply_to),
        C::ClearPolicy { name } => policies::clear_policy(ctx, name),
        C::PurgeQueue { queue } => queues::purge_queue(ctx, queue),
        C::DeleteQueue {
            queue,
            if_empty,
            if_unused,
        } => queues::delete_queue(ctx, queue, *if_empty, *if_unused),
        C::CloseConnection {
            connection,
            explanation,
        } => connections::close_connection(ctx, connection, explanation),
        C::ExportDefinitions { path } => definitions::export(ctx, path),
        C::ImportDefinitions { path } => definitions::import(ctx, path),
        C::Status => node::status(ctx),
        C::AwaitStartup => node::await_startup(ctx),
        C::Stop { idempotent } => node::stop(ctx, *idempotent),
    }
}
