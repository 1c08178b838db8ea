//! The `pgssl` binary: parse the command line, set up logging, run, map the outcome to an exit code
//! (0 success, 1 failure with one `error:` line, 2 usage).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits with 2 on usage errors and 0 for --help/--version.
    let cli = pgssl::cli::Cli::parse();
    let default_level = if cli.is_serve() { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("PGSSL_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `finish` + our own `log` bridge rather than `init`, whose bridge would keep rustls' levels.
    let installed = match cli.log_format {
        pgssl::cli::LogFormat::Json => {
            tracing::subscriber::set_global_default(builder.json().finish())
        }
        // Colour codes only for a person at a terminal, never in files or pipes that tools parse.
        pgssl::cli::LogFormat::Text => tracing::subscriber::set_global_default(
            builder
                .with_ansi(
                    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
                )
                .finish(),
        ),
    };
    if installed.is_ok() {
        let _ = pgssl::telemetry::LogBridge::install();
    }
    // The process's one runtime, for every command and for `serve`. One worker: sessions run on
    // `serve`'s own per-core workers, and this runtime carries only the control plane (operations,
    // the admin server, the control socket, signals, metrics, the managed repository's supervisor).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"));
    match runtime.and_then(|runtime| Ok(runtime.block_on(cli.run())?)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Each error's message already carries its cause; print it once, on one line.
            pgssl::control::operations::print_line(
                &mut std::io::stderr(),
                &format!("error: {}", err.to_string().replace('\n', " ")),
            );
            ExitCode::from(1)
        }
    }
}
