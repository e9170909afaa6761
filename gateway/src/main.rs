//! `marquee`: parse flags, validate them once, run the server, map errors to an exit code.
#![forbid(unsafe_code)]

use clap::Parser;
use marquee_gateway::{Cli, Config};
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(marquee_gateway::config::Command::Token(t)) = &cli.command {
        return print_token(t);
    }
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("marquee: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marquee: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(marquee_gateway::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `marquee token`: prints a token signed with the configured secret.
fn print_token(t: &marquee_gateway::config::TokenArgs) -> std::process::ExitCode {
    use marquee_gateway::auth::{Auth, Role, unix_secs, valid_user_name};
    if !valid_user_name(&t.name) {
        eprintln!("marquee: --name must be 1-32 characters of [A-Za-z0-9_-]");
        return std::process::ExitCode::from(2);
    }
    let role = if t.publisher { Role::Publisher } else { Role::User };
    let auth = Auth::new(t.auth_secret.clone().into_bytes());
    println!("{}", auth.issue(&t.name, role, unix_secs(), t.ttl.as_secs() as i64));
    std::process::ExitCode::SUCCESS
}
