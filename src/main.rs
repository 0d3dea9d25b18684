use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use job_executor::cli::{
    Cli, Command, run_check, run_operator, run_render, run_schedule, run_send, run_validate,
    unknown_settings_in_environment,
};
use job_executor::{config, crd, stage};

// Every event allocates its parsed JSON, its answer and its HTTP buffers, from several threads at
// once: glibc's malloc took a fifth of the CPU under ingest load (the image's static musl one is
// known to be slower still), and mimalloc's thread-local heaps keep it cheap. docs/decisions.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The matches too, not only the parsed arguments: `check-run` shows where each value came
    // from (flag, environment or default).
    let matches = Cli::command().try_get_matches().unwrap_or_else(|error| {
        // A setting missing or refused may be one misspelt in the environment.
        let subcommand = std::env::args_os().nth(1);
        if subcommand.is_some_and(|name| name == "run" || name == "check-run") {
            for unknown in unknown_settings_in_environment() {
                eprintln!("warning: {unknown}");
            }
        }
        error.exit()
    });
    let cli = Cli::from_arg_matches(&matches)
        .unwrap_or_else(|error| error.format(&mut Cli::command()).exit());
    let result = match cli.command {
        Command::Render(args) => run_render(&args),
        Command::Validate(args) => Ok(run_validate(&args)),
        Command::Schema => print_schema(),
        Command::StageFiles(args) => stage::stage_files(&args.from, &args.to)
            .map(|report| {
                job_executor::outln!(
                    "staged {} file(s), {} byte(s) into {}",
                    report.files,
                    report.bytes,
                    args.to.display()
                );
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Command::Run(args) => run(*args),
        Command::Crd { kind } => {
            let kinds = match kind {
                Some(kind) => vec![kind],
                None => vec![crd::CrdKind::Jobrun, crd::CrdKind::Jobschedule],
            };
            kinds
                .into_iter()
                .map(crd::crd_yaml)
                .collect::<Result<Vec<_>, _>>()
                .map(|documents| {
                    job_executor::out!("{}", documents.join("---\n"));
                    ExitCode::SUCCESS
                })
                .map_err(anyhow::Error::from)
        }
        Command::Send(args) => run_send(&args).map_err(anyhow::Error::from),
        Command::Schedule(args) => run_schedule(&args).map_err(anyhow::Error::from),
        Command::CheckRun(args) => {
            let check_run = matches.subcommand_matches("check-run").unwrap_or(&matches);
            run_check(&args, check_run).map_err(anyhow::Error::from)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn print_schema() -> anyhow::Result<ExitCode> {
    job_executor::outln!(
        "{}",
        serde_json::to_string_pretty(&config::published_schema())?
    );
    Ok(ExitCode::SUCCESS)
}

fn run(args: job_executor::cli::RunArgs) -> anyhow::Result<ExitCode> {
    let json = args.operator.log_format == job_executor::trace::LogFormat::Json;
    match run_logged(args) {
        // What stops the operator is the line a log collector most needs: one it parses.
        Err(error) if json => {
            let line = serde_json::json!({
                "timestamp": jiff::Timestamp::now().to_string(),
                "level": "ERROR",
                "fields": {"message": format!("{error:#}")},
                "target": "job_executor",
            });
            eprintln!("{line}");
            Ok(ExitCode::FAILURE)
        }
        result => result,
    }
}

fn run_logged(args: job_executor::cli::RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let telemetry = job_executor::trace::init(
        args.operator.otlp_endpoint.as_deref(),
        args.operator.log_format,
        &runtime,
    )?;
    let result = runtime.block_on(run_operator(args));
    // The last spans are exported on the runtime, from this thread, before it stops.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}
