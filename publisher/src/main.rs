//! The `publisher` binary: parse options, run, print the summary, exit with its status.

use clap::Parser;
use publisher::Args;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    // Ctrl-C stops generating; requests in flight finish and the summary still prints.
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: never stop early rather than stop at once.
            std::future::pending::<()>().await;
        }
        eprintln!("publisher: stopping; waiting for requests in flight (Ctrl-C again to quit)");
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
    };
    match publisher::run(args, shutdown).await {
        Ok(summary) => {
            if json {
                match serde_json::to_string(&summary) {
                    Ok(line) => println!("{line}"),
                    Err(e) => eprintln!("publisher: {e}"),
                }
            } else {
                println!("{summary}");
            }
            ExitCode::from(summary.exit_code())
        }
        Err(e) => {
            eprintln!("publisher: {e:#}");
            ExitCode::from(2)
        }
    }
}
