//! The command line: global options and one subcommand per rabbitmqctl command, with the
//! help text `warrenctl --help` and `warrenctl help <command>` print.

use clap::{Args, Parser, Subcommand};

use crate::output::Formatter;

#[derive(Debug, Parser)]
#[command(
    name = "warrenctl",
    version,
    about = "Administer a Warren broker the way rabbitmqctl administers RabbitMQ.",
    long_about = "Administer a Warren broker the way rabbitmqctl administers RabbitMQ.\n\n\
        warrenctl talks to the broker's HTTP management API only (port 15672 by default), so it \
        works against any broker that serves RabbitMQ's management API, RabbitMQ included. \
        Commands, columns, output and exit codes follow rabbitmqctl's.",
    after_help = "Exit codes (as rabbitmqctl's): 0 ok, 64 usage, 65 bad data or no such vhost, \
        67 no such user, 69 broker unreachable or refused, 70 internal error, 74 I/O error, \
        75 timed out, 77 access refused.\n\n\
        Examples:\n  \
        warrenctl list_queues name messages_ready messages_unacknowledged\n  \
        warrenctl --node rabbit@mq1 -p staging --formatter json list_exchanges\n  \
        warrenctl await_startup --timeout 30 && warrenctl status"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Broker to talk to: HOST, HOST:PORT, rabbit@HOST or http://HOST:PORT.
    #[arg(
        short = 'n',
        long = "node",
        visible_alias = "host",
        global = true,
        env = "WARRENCTL_NODE",
        default_value = "localhost",
        value_name = "NODE"
    )]
    pub node: String,

    /// Port of the HTTP management API [default: 15672, or the port given in --node].
    #[arg(long, global = true, env = "WARRENCTL_PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// User to authenticate as (HTTP basic auth).
    #[arg(
        id = "api_user",
        long = "user",
        value_name = "USER",
        global = true,
        env = "WARRENCTL_USER",
        default_value = "guest"
    )]
    pub user: String,

    /// Password of --user.
    #[arg(
        id = "api_password",
        long = "password",
        value_name = "PASSWORD",
        global = true,
        env = "WARRENCTL_PASSWORD",
        hide_env_values = true,
        default_value = "guest"
    )]
    pub password: String,

    /// Virtual host for commands scoped to one.
    #[arg(
        id = "scope_vhost",
        short = 'p',
        long = "vhost",
        global = true,
        default_value = "/",
        value_name = "VHOST"
    )]
    pub vhost: String,

    /// Output format: table (rabbitmqctl's default), json, or tsv (header and rows only).
    #[arg(long, global = true, value_enum, default_value_t = Formatter::Table)]
    pub formatter: Formatter,

    /// Suppress informational messages.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Suppress informational messages and table header rows.
    #[arg(short, long, global = true)]
    pub silent: bool,

    /// Seconds to wait for an answer (await_startup: for the broker to come up; stop: for
    /// it to go down) [default: 60; await_startup: 300].
    #[arg(short, long, global = true, value_name = "SECONDS", value_parser = parse_timeout)]
    pub timeout: Option<f64>,
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds > 0.0 => Ok(seconds),
        _ => Err(format!("'{text}' is not a positive number of seconds")),
    }
}

/// Columns to show, and whether to print the header row.
#[derive(Debug, Args)]
pub struct ColumnArgs {
    /// Columns to show, space- or comma-separated (see the list below).
    #[arg(value_name = "COLUMN")]
    pub columns: Vec<String>,

    /// Do not print the header row.
    #[arg(long = "no-table-headers")]
    pub no_table_headers: bool,
}

#[derive(Debug, Args)]
pub struct HeaderArgs {
    /// Do not print the header row.
    #[arg(long = "no-table-headers")]
    pub no_table_headers: bool,
}

#[derive(Debug, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// Lists queues and their properties [default columns: name messages].
    ListQueues(ColumnArgs),
    /// Lists exchanges [default columns: name type].
    ListExchanges(ColumnArgs),
    /// Lists all bindings on a vhost.
    ListBindings(ColumnArgs),
    /// Lists AMQP 0-9-1 connections [default columns: user peer_host peer_port state].
    ListConnections(ColumnArgs),
    /// Lists all channels [default columns: pid user consumer_count messages_unacknowledged].
    ListChannels(ColumnArgs),
    /// Lists all consumers for a vhost.
    ListConsumers(ColumnArgs),
    /// Lists user names and tags.
    ListUsers(HeaderArgs),
    /// Lists virtual hosts [default columns: name].
    ListVhosts(ColumnArgs),
    /// Lists user permissions in a virtual host.
    ListPermissions(HeaderArgs),
    /// Lists all policies in a virtual host.
    ListPolicies(HeaderArgs),

    /// Creates a user with no tags and no permissions.
    AddUser {
        /// Name of the user to create.
        username: String,
        /// The new user's password.
        password: String,
    },
    /// Deletes a user.
    DeleteUser {
        /// Name of the user to delete.
        username: String,
    },
    /// Changes the password of a user.
    ChangePassword {
        /// Name of the user.
        username: String,
        /// The user's new password.
        new_password: String,
    },
    /// Sets user tags (administrator, monitoring, management, policymaker, ...); none clears them.
    SetUserTags {
        /// Name of the user.
        username: String,
        /// The tags, replacing the user's current ones.
        tags: Vec<String>,
    },
    /// Sets user permissions in a vhost: configure, write and read regular expressions.
    SetPermissions {
        /// Name of the user.
        username: String,
        /// Regular expression of the resources the user may configure.
        conf: String,
        /// Regular expression of the resources the user may write to.
        write: String,
        /// Regular expression of the resources the user may read from.
        read: String,
    },
    /// Revokes user permissions in a vhost.
    ClearPermissions {
        /// Name of the user.
        username: String,
    },

    /// Creates a virtual host (no error if it exists).
    AddVhost {
        /// Name of the virtual host.
        vhost: String,
        /// Description for the virtual host.
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated tags for the virtual host.
        #[arg(long)]
        tags: Option<String>,
        /// Queue type used when a client does not name one (classic, quorum, stream).
        #[arg(long = "default-queue-type")]
        default_queue_type: Option<String>,
    },
    /// Deletes a virtual host and everything in it.
    DeleteVhost {
        /// Name of the virtual host.
        vhost: String,
    },

    /// Sets or updates a policy in a vhost.
    SetPolicy {
        /// Name of the policy.
        name: String,
        /// Regular expression the names of queues/exchanges must match.
        pattern: String,
        /// The policy's definition as a JSON object, e.g. '{"max-length":10}'.
        definition: String,
        /// Priority: the policy with the highest priority applies.
        #[arg(long, default_value_t = 0)]
        priority: i64,
        /// What the policy applies to: queues, exchanges or all.
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
    },
    /// Clears (removes) a policy.
    ClearPolicy {
        /// Name of the policy.
        name: String,
    },

    /// Purges a queue (removes all messages ready for delivery).
    PurgeQueue {
        /// Name of the queue.
        queue: String,
    },
    /// Deletes a queue.
    DeleteQueue {
        /// Name of the queue.
        queue: String,
        /// Delete the queue only if it is empty (no messages ready for delivery).
        #[arg(short = 'e', long = "if-empty")]
        if_empty: bool,
        /// Delete the queue only if it has no consumers.
        #[arg(short = 'u', long = "if-unused")]
        if_unused: bool,
    },
    /// Closes a connection; CONNECTION is its name (list_connections name, or pid).
    CloseConnection {
        /// The connection's name, e.g. "127.0.0.1:52345 -> 127.0.0.1:5672".
        connection: String,
        /// Reason given to the client.
        explanation: String,
    },

    /// Exports definitions (users, vhosts, permissions, policies, queues, exchanges,
    /// bindings) in RabbitMQ's JSON format to a file, or to stdout with "-".
    ExportDefinitions {
        /// File to write, or "-" for standard output.
        #[arg(value_name = "FILE|-")]
        path: String,
    },
    /// Imports definitions in RabbitMQ's JSON format from a file, or from stdin with "-".
    ImportDefinitions {
        /// File to read, or "-" for standard input.
        #[arg(value_name = "FILE|-")]
        path: String,
    },

    /// Displays the broker's version, listeners, resource usage and totals.
    Status,
    /// Waits until the broker's management API answers (--timeout, default 300 s).
    AwaitStartup,
    /// Stops the broker gracefully (Warren's POST /api/warren/stop) and waits until it is down.
    Stop {
        /// Succeed if the broker is already not running.
        #[arg(long)]
        idempotent: bool,
    },
}
