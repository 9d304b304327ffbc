//! The `warrenctl` binary: parses the command line, runs one command against the broker's
//! HTTP management API, prints any failure on stderr and exits with rabbitmqctl's code.

mod cli;
mod client;
mod commands;
mod error;
mod output;
mod value;

use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, GlobalArgs};
use crate::client::Endpoint;
use crate::commands::{list, Context};
use crate::error::{CtlError, EX_USAGE};
use crate::output::Output;

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS // --help, --version
            };
        }
    };
    let result = context(cli.global).and_then(|ctx| {
        let result = commands::run(&cli.command, &ctx);
        match result {
            Err(e) if e.unreachable => Err(e),
            other => ctx.out.flush_info().and(other),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code)
        }
    }
}

/// The derived parser, with each list command's help extended by its valid columns (kept in
/// one place: the list specs).
fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    for spec in list::ALL {
        command = command.mut_subcommand(spec.command, |sub| sub.after_help(spec.columns_help()));
    }
    let matches = command.try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn context(global: GlobalArgs) -> Result<Context, CtlError> {
    let endpoint = Endpoint::resolve(&global.node, global.port)?;
    Ok(Context::new(
        endpoint,
        global.user,
        global.password,
        global.vhost,
        Output::new(global.formatter, global.quiet, global.silent),
        global.timeout.map(Duration::from_secs_f64),
    ))
}
