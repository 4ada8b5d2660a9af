//! The `gateway` binary: command-line parsing only.

use std::path::PathBuf;
use std::process::ExitCode;

use chatcrafter_gateway::cli;
use clap::{Parser, Subcommand};

/// ChatCrafter Gateway: one conversation across the web widget, WhatsApp,
/// Telegram and Discord.
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. Without --config: dev mode (./data, bundled plugins, generated secrets).
    Serve {
        /// The configuration file (gateway.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run only the queue's worker (replies, deliveries, reminders) and the sweeper, with no HTTP listener: for a Redis store other nodes write, such as the Spin edge's (docs/edge.md).
    Worker {
        /// The configuration file (gateway.toml), with `store.kind = "redis"`.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Import customers from a CSV file (see docs/config.md and INTERFACE §5).
    Import {
        /// The CSV file.
        file: PathBuf,
        /// The configuration file (gateway.toml); without it, dev mode's store.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Work with channel plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Work with erasure receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// After a data-key rotation: seal everything under the current key, so that retired keys can be removed.
    Rekey {
        /// The configuration file (gateway.toml); without it, dev mode's store.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Records per unit of work.
        #[arg(long, default_value_t = 500)]
        batch: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ReceiptCommand {
    /// Check an erasure receipt's signature (exit 1 and say why when it does not verify).
    Verify {
        /// The receipt, as `DELETE /admin/v1/customers/{id}` answered it.
        file: PathBuf,
        /// The configuration file whose signing key to check with; without it (and without --public-key), dev mode's.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The signing key's public half, base64 (as `gateway receipt public-key` prints it).
        #[arg(long, value_name = "KEY", conflicts_with = "config")]
        public_key: Option<String>,
    },
    /// Print the receipt signing key's id and public half (base64).
    PublicKey {
        /// The configuration file (gateway.toml); without it, dev mode's.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain; name the first entry that was edited, removed or
    /// moved (exit 1), or print how many entries and the head hash.
    Verify {
        /// The configuration file (gateway.toml); without it, dev mode's store.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load a plugin, validate it against the WIT world and print its manifest.
    Check {
        /// The plugin component (`FILE.wasm`, or `builtin:whatsapp` etc.).
        file: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one plugin export on a recorded request, offline, and print the result as JSON.
    /// Write a new plugin crate NAME (a webhook channel with HMAC signatures, native tests, a release profile) that builds out of tree.
    New {
        /// The plugin's id and crate name (lower-case letters, digits and `-`, at most 32).
        name: String,
        /// Where to create the crate's folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// A local checkout of the SDK (`plugins/sdk`) to depend on, instead of the project's git repository.
        #[arg(long, value_name = "PATH")]
        sdk: Option<PathBuf>,
    },
    Run {
        /// The plugin component (`FILE.wasm`, or `builtin:whatsapp` etc.).
        file: PathBuf,
        /// The recorded request (parse-inbound) or outbound message (render-outbound), JSON.
        #[arg(long, value_name = "REQ.json")]
        request: PathBuf,
        /// The export to call.
        #[arg(long, value_enum, default_value = "parse-inbound")]
        export: cli::Export,
        /// A channel secret, `NAME=VALUE` (repeatable): the request is first verified as the gateway would (exit 1 saying why when it does not).
        #[arg(long = "secret", value_name = "NAME=VALUE")]
        secrets: Vec<String>,
        /// Sign the request as the channel would (HMAC or shared-secret schemes), with the --secret values, before verifying it; the headers added are printed on stderr.
        #[arg(long)]
        sign: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Serve { config } => {
            init_tracing();
            cli::serve(config.as_deref()).map(|()| String::new())
        }
        Command::Worker { config } => {
            init_tracing();
            cli::worker(&config).map(|()| String::new())
        }
        Command::Import { file, config } => cli::import(&file, config.as_deref()),
        Command::Audit(AuditCommand::Verify { config }) => cli::audit_verify(config.as_deref()),
        Command::Receipt(ReceiptCommand::Verify {
            file,
            config,
            public_key,
        }) => cli::receipt_verify(&file, config.as_deref(), public_key.as_deref()),
        Command::Rekey { config, batch } => cli::rekey(config.as_deref(), batch),
        Command::Receipt(ReceiptCommand::PublicKey { config }) => {
            cli::receipt_public_key(config.as_deref())
        }
        Command::Plugin(PluginCommand::Check { file, json }) => cli::plugin_check(&file, json),
        Command::Plugin(PluginCommand::New { name, dir, sdk }) => {
            cli::plugin_new(&name, &dir, sdk.as_deref())
        }
        Command::Plugin(PluginCommand::Run {
            file,
            request,
            export,
            secrets,
            sign,
        }) => cli::plugin_run(&file, &request, export, &secrets, sign),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}
