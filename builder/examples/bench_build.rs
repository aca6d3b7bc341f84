//! `kubekuma bench build` without the agent binary:
//! `cargo run --release -p kubekuma-builder --example bench_build -- MONITORS [DAYS] [--no-png]`.
//! With `--parts`, the CPU time of rasterising a whole status badge against its label
//! and message parts (`kubekuma_builder::bench::parts`).

// An example: a failed unwrap ends it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let monitors = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let days = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(90);
    let png = !args.iter().any(|a| a == "--no-png");
    if args.iter().any(|a| a == "--parts") {
        println!("{}", kubekuma_builder::bench::parts(300)?);
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(kubekuma_builder::bench::run(
        kubekuma_builder::bench::BuildBench {
            monitors,
            days,
            png,
        },
    ))?;
    println!("{report}");
    Ok(())
}
