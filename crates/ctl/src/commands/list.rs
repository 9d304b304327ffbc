//! The list_* commands: for each, the columns rabbitmqctl offers and where each is found in
//! the management API's JSON, the endpoint, and the informational lines it prints.

use serde_json::Value;

use crate::cli::{ColumnArgs, HeaderArgs};
use crate::client::api_path;
use crate::error::{CtlError, EX_USAGE};
use crate::output::Listing;
use crate::value::Kind;

use super::Context;

/// Where a column's value is in one object of the API's answer.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Field(&'static str),
    /// A field of a nested object, e.g. a channel's `connection_details.name`.
    Nested(&'static str, &'static str),
    /// The same for every row (a binding's source is always an exchange).
    Constant(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub source: Source,
    pub kind: Kind,
}

const fn field(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        source: Source::Field(name),
        kind,
    }
}

const fn renamed(name: &'static str, source: Source, kind: Kind) -> Column {
    Column { name, source, kind }
}

/// One list command's columns (all it accepts, in rabbitmqctl's help order) and defaults.
pub struct ListSpec {
    pub command: &'static str,
    pub columns: &'static [Column],
    pub default_columns: &'static [&'static str],
    /// Whether the command takes column names (list_users and friends do not).
    pub selectable: bool,
}

use Kind::{AtomList, FieldTable, IpAddress, JsonText, NodeStates, Plain, Protocol, Text};

pub const QUEUES: ListSpec = ListSpec {
    command: "list_queues",
    columns: &[
        field("arguments", FieldTable),
        field("auto_delete", Plain),
        field("consumer_capacity", Plain),
        field("consumer_utilisation", Plain),
        field("consumers", Plain),
        field("durable", Plain),
        field("exclusive", Plain),
        field("exclusive_consumer_tag", Text),
        field("head_message_timestamp", Text),
        field("memory", Plain),
        field("message_bytes", Plain),
        field("message_bytes_persistent", Plain),
        field("message_bytes_ram", Plain),
        field("message_bytes_ready", Plain),
        field("message_bytes_unacknowledged", Plain),
        field("messages", Plain),
        field("messages_persistent", Plain),
        field("messages_ram", Plain),
        field("messages_ready", Plain),
        field("messages_ready_ram", Plain),
        field("messages_unacknowledged", Plain),
        field("messages_unacknowledged_ram", Plain),
        field("name", Plain),
        field("policy", Text),
        field("state", Plain),
        field("type", Plain),
    ],
    default_columns: &["name", "messages"],
    selectable: true,
};

pub const EXCHANGES: ListSpec = ListSpec {
    command: "list_exchanges",
    columns: &[
        field("arguments", FieldTable),
        field("auto_delete", Plain),
        field("durable", Plain),
        field("internal", Plain),
        field("name", Plain),
        field("policy", Text),
        field("type", Plain),
    ],
    default_columns: &["name", "type"],
    selectable: true,
};

pub const BINDINGS: ListSpec = ListSpec {
    command: "list_bindings",
    columns: &[
        field("arguments", FieldTable),
        renamed("destination_kind", Source::Field("destination_type"), Plain),
        renamed("destination_name", Source::Field("destination"), Plain),
        field("routing_key", Plain),
        renamed("source_kind", Source::Constant("exchange"), Plain),
        renamed("source_name", Source::Field("source"), Plain),
    ],
    default_columns: &[
        "source_name",
        "source_kind",
        "destination_name",
        "destination_kind",
        "routing_key",
        "arguments",
    ],
    selectable: true,
};

pub const CONNECTIONS: ListSpec = ListSpec {
    command: "list_connections",
    columns: &[
        field("auth_mechanism", Plain),
        field("channel_max", Plain),
        field("channels", Plain),
        field("client_properties", FieldTable),
        field("connected_at", Plain),
        field("frame_max", Plain),
        field("host", IpAddress),
        field("name", Plain),
        field("peer_cert_issuer", Text),
        field("peer_cert_subject", Text),
        field("peer_cert_validity", Text),
        field("peer_host", IpAddress),
        field("peer_port", Plain),
        // The API has no Erlang pids; a connection's name is what close_connection takes.
        renamed("pid", Source::Field("name"), Plain),
        field("port", Plain),
        field("protocol", Protocol),
        field("recv_cnt", Plain),
        field("recv_oct", Plain),
        field("send_cnt", Plain),
        field("send_oct", Plain),
        field("send_pend", Plain),
        field("ssl", Plain),
        field("ssl_cipher", Text),
        field("ssl_hash", Text),
        field("ssl_key_exchange", Text),
        field("ssl_protocol", Text),
        field("state", Plain),
        field("timeout", Plain),
        field("user", Plain),
        field("vhost", Plain),
    ],
    default_columns: &["user", "peer_host", "peer_port", "state"],
    selectable: true,
};

pub const CHANNELS: ListSpec = ListSpec {
    command: "list_channels",
    columns: &[
        field("acks_uncommitted", Plain),
        field("confirm", Plain),
        renamed(
            "connection",
            Source::Nested("connection_details", "name"),
            Plain,
        ),
        field("consumer_count", Plain),
        field("global_prefetch_count", Plain),
        field("messages_unacknowledged", Plain),
        field("messages_uncommitted", Plain),
        field("messages_unconfirmed", Plain),
        field("name", Plain),
        field("number", Plain),
        renamed("pid", Source::Field("name"), Plain),
        field("prefetch_count", Plain),
        field("transactional", Plain),
        field("user", Plain),
        field("vhost", Plain),
    ],
    default_columns: &["pid", "user", "consumer_count", "messages_unacknowledged"],
    selectable: true,
};

pub const CONSUMERS: ListSpec = ListSpec {
    command: "list_consumers",
    columns: &[
        field("ack_required", Plain),
        field("active", Plain),
        field("activity_status", Plain),
        field("arguments", FieldTable),
        renamed(
            "channel_pid",
            Source::Nested("channel_details", "name"),
            Plain,
        ),
        field("consumer_tag", Plain),
        field("prefetch_count", Plain),
        renamed("queue_name", Source::Nested("queue", "name"), Plain),
    ],
    default_columns: &[
        "queue_name",
        "channel_pid",
        "consumer_tag",
        "ack_required",
        "prefetch_count",
        "active",
        "arguments",
    ],
    selectable: true,
};

pub const USERS: ListSpec = ListSpec {
    command: "list_users",
    columns: &[
        renamed("user", Source::Field("name"), Plain),
        field("tags", AtomList),
    ],
    default_columns: &["user", "tags"],
    selectable: false,
};

pub const VHOSTS: ListSpec = ListSpec {
    command: "list_vhosts",
    columns: &[
        field("cluster_state", NodeStates),
        field("default_queue_type", Text),
        field("description", Text),
        field("name", Plain),
        field("tags", AtomList),
        field("tracing", Plain),
    ],
    default_columns: &["name"],
    selectable: true,
};

pub const PERMISSIONS: ListSpec = ListSpec {
    command: "list_permissions",
    columns: &[
        field("user", Plain),
        field("configure", Plain),
        field("write", Plain),
        field("read", Plain),
    ],
    default_columns: &["user", "configure", "write", "read"],
    selectable: false,
};

pub const POLICIES: ListSpec = ListSpec {
    command: "list_policies",
    columns: &[
        field("vhost", Plain),
        field("name", Plain),
        field("pattern", Plain),
        field("apply-to", Plain),
        field("definition", JsonText),
        field("priority", Plain),
    ],
    default_columns: &[
        "vhost",
        "name",
        "pattern",
        "apply-to",
        "definition",
        "priority",
    ],
    selectable: false,
};

pub const ALL: &[&ListSpec] = &[
    &QUEUES,
    &EXCHANGES,
    &BINDINGS,
    &CONNECTIONS,
    &CHANNELS,
    &CONSUMERS,
    &USERS,
    &VHOSTS,
    &PERMISSIONS,
    &POLICIES,
];

impl ListSpec {
    /// The columns asked for ("name messages" or "name,messages"), or the defaults; unknown
    /// names fail the way rabbitmqctl's argument validation does.
    pub fn select(&self, requested: &[String]) -> Result<Vec<&'static Column>, CtlError> {
        let names: Vec<&str> = requested
            .iter()
            .flat_map(|arg| arg.split(','))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .collect();
        let names = if names.is_empty() {
            self.default_columns.to_vec()
        } else {
            names
        };
        let unknown: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| self.column(name).is_none())
            .collect();
        if !unknown.is_empty() {
            return Err(CtlError::bare(
                EX_USAGE,
                format!(
                    "Error (argument validation): Info key(s) {} are not supported",
                    unknown.join(",")
                ),
            ));
        }
        Ok(names.iter().filter_map(|name| self.column(name)).collect())
    }

    fn column(&self, name: &str) -> Option<&'static Column> {
        self.columns.iter().find(|column| column.name == name)
    }

    /// The help text listing the columns, for `warrenctl help <command>`.
    pub fn columns_help(&self) -> String {
        let names: Vec<&str> = self.columns.iter().map(|c| c.name).collect();
        if self.selectable {
            format!(
                "COLUMN must be one of: {}\nDefault: {}",
                names.join(", "),
                self.default_columns.join(" ")
            )
        } else {
            format!("Columns: {}", names.join(" "))
        }
    }
}

fn extract(item: &Value, source: Source) -> Value {
    match source {
        Source::Field(name) => item.get(name).cloned().unwrap_or(Value::Null),
        Source::Nested(outer, inner) => item
            .get(outer)
            .and_then(|nested| nested.get(inner))
            .cloned()
            .unwrap_or(Value::Null),
        Source::Constant(text) => Value::from(text),
    }
}

pub fn to_listing(columns: &[&'static Column], items: &[Value]) -> Listing {
    Listing {
        columns: columns.iter().map(|c| (c.name, c.kind)).collect(),
        rows: items
            .iter()
            .map(|item| columns.iter().map(|c| extract(item, c.source)).collect())
            .collect(),
    }
}

/// What a 404 from a vhost-scoped endpoint means: rabbitmqctl lists nothing for queues,
/// exchanges, bindings and consumers of a missing vhost, and fails for the others.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MissingVhost {
    ListsNothing,
    Fails,
}

struct Request<'a> {
    spec: &'a ListSpec,
    columns: &'a [String],
    no_table_headers: bool,
    banner: Vec<String>,
    path: String,
    missing_vhost: MissingVhost,
}

fn list(ctx: &Context, request: Request<'_>) -> Result<(), CtlError> {
    let columns = request.spec.select(request.columns)?;
    for line in &request.banner {
        ctx.out.info(line)?;
    }
    let items = match ctx.api.get_list(&request.path) {
        Ok(items) => items,
        Err(e) if e.status() == Some(404) => match request.missing_vhost {
            MissingVhost::ListsNothing => Vec::new(),
            MissingVhost::Fails => return Err(CtlError::vhost_not_found(&ctx.vhost)),
        },
        Err(e) => return Err(e.into()),
    };
    ctx.out
        .listing(&to_listing(&columns, &items), request.no_table_headers)
}

pub fn queues(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    let timeout = ctx.timeout.unwrap_or(super::DEFAULT_TIMEOUT);
    list(
        ctx,
        Request {
            spec: &QUEUES,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec![
                format!("Timeout: {:?} seconds ...", timeout.as_secs_f64()),
                format!("Listing queues for vhost {} ...", ctx.vhost),
            ],
            path: api_path(&["queues", &ctx.vhost]),
            missing_vhost: MissingVhost::ListsNothing,
        },
    )
}

pub fn exchanges(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &EXCHANGES,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec![format!("Listing exchanges for vhost {} ...", ctx.vhost)],
            path: api_path(&["exchanges", &ctx.vhost]),
            missing_vhost: MissingVhost::ListsNothing,
        },
    )
}

pub fn bindings(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &BINDINGS,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            // No space before the dots: rabbitmqctl's own text.
            banner: vec![format!("Listing bindings for vhost {}...", ctx.vhost)],
            path: api_path(&["bindings", &ctx.vhost]),
            missing_vhost: MissingVhost::ListsNothing,
        },
    )
}

pub fn connections(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &CONNECTIONS,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec!["Listing connections ...".to_string()],
            path: api_path(&["connections"]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

pub fn channels(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &CHANNELS,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec!["Listing channels ...".to_string()],
            path: api_path(&["channels"]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

pub fn consumers(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &CONSUMERS,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec![format!("Listing consumers in vhost {} ...", ctx.vhost)],
            path: api_path(&["consumers", &ctx.vhost]),
            missing_vhost: MissingVhost::ListsNothing,
        },
    )
}

pub fn users(ctx: &Context, args: &HeaderArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &USERS,
            columns: &[],
            no_table_headers: args.no_table_headers,
            banner: vec!["Listing users ...".to_string()],
            path: api_path(&["users"]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

pub fn vhosts(ctx: &Context, args: &ColumnArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &VHOSTS,
            columns: &args.columns,
            no_table_headers: args.no_table_headers,
            banner: vec!["Listing vhosts ...".to_string()],
            path: api_path(&["vhosts"]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

pub fn permissions(ctx: &Context, args: &HeaderArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &PERMISSIONS,
            columns: &[],
            no_table_headers: args.no_table_headers,
            banner: vec![format!(
                "Listing permissions for vhost \"{}\" ...",
                ctx.vhost
            )],
            path: api_path(&["vhosts", &ctx.vhost, "permissions"]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

pub fn policies(ctx: &Context, args: &HeaderArgs) -> Result<(), CtlError> {
    list(
        ctx,
        Request {
            spec: &POLICIES,
            columns: &[],
            no_table_headers: args.no_table_headers,
            banner: vec![format!("Listing policies for vhost \"{}\" ...", ctx.vhost)],
            path: api_path(&["policies", &ctx.vhost]),
            missing_vhost: MissingVhost::Fails,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Formatter;
    use serde_json::json;

    #[test]
    fn unknown_columns_are_named_together() {
        let err = QUEUES
            .select(&["name".into(), "bogus".into(), "other".into()])
            .unwrap_err();
        assert_eq!(err.exit_code, EX_USAGE);
        assert_eq!(
            err.message,
            "Error (argument validation): Info key(s) bogus,other are not supported"
        );
    }

    #[test]
    fn columns_may_be_comma_separated_and_default() {
        let names = |cols: Vec<&Column>| cols.iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(QUEUES.select(&[]).unwrap()), ["name", "messages"]);
        assert_eq!(
            names(
                QUEUES
                    .select(&["name,messages_ready".into(), "state".into()])
                    .unwrap()
            ),
            ["name", "messages_ready", "state"]
        );
    }

    #[test]
    fn every_default_column_exists() {
        for spec in ALL {
            assert!(spec.select(&[]).is_ok(), "{}", spec.command);
        }
    }

    #[test]
    fn bindings_map_api_fields_to_rabbitmqctl_columns() {
        let api = [json!({"source": "ex1", "vhost": "/", "destination": "q1",
                          "destination_type": "queue", "routing_key": "a.#",
                          "arguments": {"k": "v"}, "properties_key": "x"})];
        let listing = to_listing(&BINDINGS.select(&[]).unwrap(), &api);
        assert_eq!(
            listing.render(Formatter::Table, true),
            "source_name\tsource_kind\tdestination_name\tdestination_kind\trouting_key\targuments\n\
             ex1\texchange\tq1\tqueue\ta.#\t[{\"k\",\"v\"}]\n"
        );
    }
}
