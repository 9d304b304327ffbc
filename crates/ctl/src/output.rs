//! What goes to stdout and in which shape: informational lines, listings in the table, json
//! and tsv formats, the one-line results of commands. Knows nothing of HTTP.

use std::cell::RefCell;
use std::io::{self, Write};

use serde_json::Value;

use crate::error::CtlError;
use crate::value::{self, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Formatter {
    /// rabbitmqctl's default: informational lines, a header row, tab-separated rows.
    Table,
    /// A JSON array with one object per row, as `rabbitmqctl --formatter json` prints it.
    Json,
    /// A header row and tab-separated rows, nothing else (rabbitmqadmin's tsv).
    Tsv,
}

/// A listing ready to print: column names with their kinds, and one value per column per row.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    pub columns: Vec<(&'static str, Kind)>,
    pub rows: Vec<Vec<Value>>,
}

impl Listing {
    /// The text of the whole listing in `formatter` (not the informational lines).
    pub fn render(&self, formatter: Formatter, header: bool) -> String {
        match formatter {
            Formatter::Json => self.render_json(),
            // rabbitmqctl prints no header over an empty table; a tsv file always has one.
            Formatter::Table => self.render_tabs(header && !self.rows.is_empty()),
            Formatter::Tsv => self.render_tabs(header),
        }
    }

    fn render_tabs(&self, header: bool) -> String {
        let mut out = String::new();
        if header {
            let names: Vec<&str> = self.columns.iter().map(|(name, _)| *name).collect();
            out.push_str(&names.join("\t"));
            out.push('\n');
        }
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&self.columns)
                .map(|(cell, (_, kind))| value::to_text(cell, *kind))
                .collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        out
    }

    /// One object per line, the comma leading from the second on, keys in column order:
    /// byte for byte what rabbitmqctl's json formatter writes.
    fn render_json(&self) -> String {
        let mut out = String::from("[\n");
        for (index, row) in self.rows.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            let fields: Vec<(&str, Value)> = row
                .iter()
                .zip(&self.columns)
                .map(|(cell, (name, kind))| (*name, value::to_json(cell, *kind)))
                .collect();
            out.push_str(&json_object(&fields));
            out.push('\n');
        }
        out.push_str("]\n");
        out
    }
}

/// A compact JSON object with its keys in the given order (serde_json's map would sort them).
pub fn json_object(fields: &[(&str, Value)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{}", Value::from(*key), value))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// The global output options of one run, and the informational lines not yet printed.
#[derive(Debug)]
pub struct Output {
    pub formatter: Formatter,
    /// -q: no informational lines.
    pub quiet: bool,
    /// -s: no informational lines and no header row.
    pub silent: bool,
    /// Informational lines wait for the command's first output or its end, so that a
    /// broker that cannot be reached gives one line of error and nothing else, as rabbitmqctl.
    pending: RefCell<String>,
}

impl Output {
    pub fn new(formatter: Formatter, quiet: bool, silent: bool) -> Self {
        Output {
            formatter,
            quiet,
            silent,
            pending: RefCell::new(String::new()),
        }
    }

    /// An informational line ("Listing queues for vhost / ..."): only in the table format,
    /// so json and tsv output can be parsed as they come.
    pub fn info(&self, line: &str) -> Result<(), CtlError> {
        if self.formatter == Formatter::Table && !self.quiet && !self.silent {
            let mut pending = self.pending.borrow_mut();
            pending.push_str(line);
            pending.push('\n');
        }
        Ok(())
    }

    /// Prints the informational lines held so far.
    pub fn flush_info(&self) -> Result<(), CtlError> {
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        emit(&pending)
    }

    /// The command's own output, after the informational lines that precede it.
    pub fn emit(&self, text: &str) -> Result<(), CtlError> {
        self.flush_info()?;
        emit(text)
    }

    pub fn listing(&self, listing: &Listing, no_table_headers: bool) -> Result<(), CtlError> {
        self.emit(&listing.render(self.formatter, !(no_table_headers || self.silent)))
    }

    pub fn is_json(&self) -> bool {
        self.formatter == Formatter::Json
    }
}

/// Writes to stdout (use `Output::emit` in commands). A closed pipe (`warrenctl list_queues | head -1`) is not an error.
fn emit(text: &str) -> Result<(), CtlError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CtlError::io_err(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queues() -> Listing {
        Listing {
            columns: vec![
                ("name", Kind::Plain),
                ("messages", Kind::Plain),
                ("arguments", Kind::FieldTable),
            ],
            rows: vec![
                vec![json!("q2"), json!(1), json!({"x-message-ttl": 60000})],
                vec![json!("q1"), json!(3), json!({})],
            ],
        }
    }

    #[test]
    fn table_is_a_header_and_tab_separated_rows() {
        assert_eq!(
            queues().render(Formatter::Table, true),
            "name\tmessages\targuments\nq2\t1\t[{\"x-message-ttl\",60000}]\nq1\t3\t[]\n"
        );
        assert_eq!(
            queues().render(Formatter::Table, false),
            "q2\t1\t[{\"x-message-ttl\",60000}]\nq1\t3\t[]\n"
        );
    }

    #[test]
    fn json_matches_rabbitmqctl_layout() {
        assert_eq!(
            queues().render(Formatter::Json, true),
            "[\n{\"name\":\"q2\",\"messages\":1,\"arguments\":[[\"x-message-ttl\",\"signedint\",60000]]}\n\
             ,{\"name\":\"q1\",\"messages\":3,\"arguments\":[]}\n]\n"
        );
    }

    #[test]
    fn empty_listings() {
        let empty = Listing {
            columns: vec![("name", Kind::Plain)],
            rows: vec![],
        };
        assert_eq!(empty.render(Formatter::Table, true), "");
        assert_eq!(empty.render(Formatter::Json, true), "[\n]\n");
        assert_eq!(empty.render(Formatter::Tsv, true), "name\n");
    }
}
