//! The `warren-perf` binary: flags, the runtime, and where the report goes.

use clap::Parser;
use warren_perf::{sys, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    sys::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("warren-perf: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = runtime.block_on(warren_perf::run(&cli));
    if cli.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("warren-perf: cannot write JSON: {e}"),
        }
    } else {
        print!("{}", report.render());
    }
    // Tasks still blocked on a socket must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        if cli.json {
            if let Some(e) = &report.error {
                eprintln!("warren-perf: {e}");
            }
        }
        std::process::ExitCode::FAILURE
    }
}
