//! `nodeguard`: flags, configuration, wiring and exit codes. Everything that looks at node
//! data lives in the crates; this file only connects them.

mod cli;
mod digests;
mod fleet;
mod images;
mod kube;
mod output;
mod plugin;
mod query;
mod run;

use anyhow::{Context, Result};
use cli::{
    Cli, Command, HashChoice, InventoryArg, LogFormat, OutputFormat, PolicyCommand, ScanSettings,
};
use nodeguard_hash::Algorithms;
use nodeguard_model::Severity;
use nodeguard_policy::Policy;
use nodeguard_scan::{NoPods, ScanOptions, ScanScope, Scanner};
use nodeguard_table as table;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Exit status when `--fail-on` finds a finding at or above its severity.
pub(crate) const EXIT_FINDINGS: u8 = 3;

fn main() -> ExitCode {
    let cli = parse_cli();
    init_logging(cli.log_format);
    raise_open_file_limit();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("nodeguard: error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The flags, with help saying `kubectl nodeguard` when run as the kubectl plugin.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next();
    let matches = plugin::command_for(argv0.as_deref(), Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Raises the soft open-file limit to the hard one (at most 1,048,576), as the Go runtime
/// does for every program: a scan keeps a few handles per process open between scans (see
/// `nodeguard_collect::Collector::set_dir_budget`, sized from this limit), and container
/// runtimes often start containers at a soft 1,024 under a far higher hard limit. A failure
/// leaves the limit as it was.
fn raise_open_file_limit() {
    const CAP: libc::rlim_t = 1 << 20;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = limit.rlim_max.min(CAP);
    if limit.rlim_cur >= wanted {
        return;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit reads one rlimit from the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        tracing::debug!(
            from = before,
            to = wanted,
            "raised the soft open-file limit"
        );
    }
}

/// The error and its causes on one line, each cause once: the crates' errors already embed
/// their source in their own message (`{path}: cannot read policy: {source}`), so a cause whose
/// text the line already holds is not repeated (anyhow's `{:#}` would print it twice).
fn error_chain(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Scan(args) => {
            let policy = match &args.settings.config {
                Some(path) => Policy::load(path)?,
                None => Policy::default(),
            };
            let mut scanner = build_scanner(&args.settings, policy);
            let pre_pass = images::prepare_scan(
                &mut scanner,
                &args.images,
                args.state_dir.as_deref(),
                matches!(
                    args.settings.hash,
                    cli::HashChoice::Sha512 | cli::HashChoice::Both
                ),
                args.image_wait,
            )?;
            let scope = if args.no_fs {
                ScanScope::Processes
            } else {
                ScanScope::ProcessesAndFilesystems
            };
            let mut report = scanner.scan(scope, &NoPods).context("scan failed")?;
            pre_pass.count_in(&mut report.stats);
            for warning in &report.warnings {
                tracing::debug!(%warning, "scan warning");
            }
            let text = match args.output {
                OutputFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
                OutputFormat::Table => {
                    let listing = if args.show_low {
                        table::Listing::ALL
                    } else {
                        table::Listing::SCAN
                    };
                    table::report_table_with(&report, inventory(&args), listing, output::width())
                }
            };
            output::print(&text).context("cannot write the report")?;
            let threshold = args.fail_on.map(severity);
            if threshold.is_some_and(|t| report.max_severity().is_some_and(|m| m >= t)) {
                return Ok(ExitCode::from(EXIT_FINDINGS));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            run::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Query(args) => {
            query::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fleet(command) => fleet::run(command),
        Command::Hash(args) => {
            let algs = algorithms(args.hash);
            let mut failed = false;
            for file in &args.files {
                match nodeguard_hash::digest_file(file, algs, args.max_size) {
                    Ok(d) => {
                        for digest in [d.sha256_hex(), d.sha512_hex()].into_iter().flatten() {
                            output::print(&format!("{digest}  {}\n", file.display()))?;
                        }
                    }
                    Err(e) => {
                        eprintln!("nodeguard: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Digests(cli::DigestsCommand::Import(args)) => {
            digests::import(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            // A policy file, or the ConfigMap manifest that ships one (each key checked).
            for (name, policy) in Policy::load_file_or_configmap(&file)? {
                output::print(&format!("{name}: ok ({})\n", policy.summary()))?;
                for (setting, why) in policy.weakened() {
                    output::print(&format!("{name}: warning: {setting}: {why}\n"))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn inventory(args: &cli::ScanArgs) -> table::Inventory {
    let all = args.inventory || args.show.contains(&InventoryArg::All);
    table::Inventory {
        containers: all || args.show.contains(&InventoryArg::Containers),
        processes: all || args.show.contains(&InventoryArg::Processes),
        files: all || args.show.contains(&InventoryArg::Files),
    }
}

/// The scanner the settings describe, judging with `policy`.
pub(crate) fn build_scanner(settings: &ScanSettings, policy: Policy) -> Scanner {
    let node = settings
        .node_name
        .clone()
        .unwrap_or_else(|| nodeguard_scan::node_name(&settings.proc_root));
    let mut options = ScanOptions::new(
        settings.proc_root.clone(),
        settings.cgroup_root.clone(),
        node,
    );
    if let Some(host_root) = &settings.host_root {
        options.collect.host_root = host_root.clone();
    }
    options.show_secrets = settings.show_secrets;
    options.algorithms = algorithms(settings.hash);
    options.max_hash_size = settings.max_hash_size;
    options.walk_budget.max_hash_bytes = settings.max_hash_size;
    options.walk_budget.max_files = settings.walk_max_files;
    options.walk_budget.max_duration = Duration::from_secs(settings.walk_max_seconds);
    options.fs_incremental = settings.fs_incremental == crate::cli::SwitchArg::On;
    options.fs_recheck_files = settings.fs_recheck_files;
    if let Some(threads) = settings.threads {
        // Each is a real thread of the walk: an absurd count would fail to spawn (a panic).
        options.threads = threads.clamp(1, 64);
    }
    Scanner::new(options, Arc::new(policy))
}

fn algorithms(choice: HashChoice) -> Algorithms {
    match choice {
        HashChoice::Sha256 => Algorithms::SHA256,
        HashChoice::Sha512 => Algorithms::SHA512,
        HashChoice::Both => Algorithms::BOTH,
    }
}

pub(crate) fn severity(arg: cli::SeverityArg) -> Severity {
    match arg {
        cli::SeverityArg::Low => Severity::Low,
        cli::SeverityArg::Medium => Severity::Medium,
        cli::SeverityArg::High => Severity::High,
        cli::SeverityArg::Critical => Severity::Critical,
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Colour codes only for a terminal: in a file or a pipe they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
