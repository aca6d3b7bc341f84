//! `kubekuma bench`: measure the agent and the builder.

use std::process::ExitCode;

use super::BenchCommand;

/// `kubekuma bench agent|twins|build|target`: the report on stdout.
pub(super) async fn bench(what: BenchCommand) -> ExitCode {
    match what {
        BenchCommand::Target { listen } => match crate::bench::serve_target(&listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kubekuma bench target: {e:#}");
                ExitCode::FAILURE
            }
        },
        BenchCommand::Build {
            monitors,
            days,
            no_png,
        } => {
            let b = kubekuma_builder::bench::BuildBench {
                monitors,
                days: days.clamp(1, 400),
                png: !no_png,
            };
            match kubekuma_builder::bench::run(b).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubekuma bench build: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        BenchCommand::Twins {
            monitors,
            clients,
            duration,
            change_every_ms,
        } => {
            let b = crate::bench::TwinsBench {
                monitors,
                clients: clients.max(1),
                duration: duration.max(1),
                change_every_ms,
            };
            match crate::bench::run_twins_bench(b).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubekuma bench twins: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        BenchCommand::Agent {
            monitors,
            interval,
            duration,
            concurrency,
            database_url,
        } => {
            let b = crate::bench::AgentBench {
                monitors,
                interval,
                duration,
                concurrency,
                database_url,
            };
            match crate::bench::run_agent_bench(b).await {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kubekuma bench agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
