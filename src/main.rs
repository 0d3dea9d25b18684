use std::process::ExitCode;

use clap::Parser;
use job_executor::cli::{Cli, Command, run_render, run_validate};
use job_executor::{config, stage};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Render(args) => run_render(&args),
        Command::Validate(args) => Ok(run_validate(&args)),
        Command::Schema => print_schema(),
        Command::StageFiles(args) => stage::stage_files(&args.from, &args.to)
            .map(|report| {
                println!(
                    "staged {} file(s), {} byte(s) into {}",
                    report.files,
                    report.bytes,
                    args.to.display()
                );
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
    };
    result.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

fn print_schema() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(config::json_schema())?);
    Ok(ExitCode::SUCCESS)
}
