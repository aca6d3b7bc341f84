//! `kubekuma bench build` without the agent binary:
//! `cargo run --release -p kubekuma-builder --example bench_build -- MONITORS [DAYS] [--no-png]`.
//! With `--parts`, the CPU time of rasterising a whole status badge against its label
//! and message parts (see `BadgeRenderer::png_parts`).

// An example: a failed unwrap ends it with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let monitors = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let days = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(90);
    let png = !args.iter().any(|a| a == "--no-png");
    if args.iter().any(|a| a == "--parts") {
        let theme = kubekuma_builder::Theme::default_theme()?;
        let r = kubekuma_builder::badge::BadgeRenderer::new(theme.badge_font)?;
        let badges: Vec<_> = (0..300)
            .map(|i| {
                kubekuma_builder::badge::Badge::new(
                    format!("svc-{i:05}"),
                    "up",
                    kubekuma_builder::badge::BadgeColor::Green,
                )
            })
            .collect();
        let t = thread_cpu();
        for b in &badges {
            r.png(&r.svg(b), 2.0)?;
        }
        let whole = thread_cpu() - t;
        let t = thread_cpu();
        for b in &badges {
            let [l, _] = r.png_parts(b, 2.0).unwrap_or_default();
            r.raster_part(&l, 2.0)?;
        }
        let label = thread_cpu() - t;
        let t = thread_cpu();
        for b in &badges {
            let [_, m] = r.png_parts(b, 2.0).unwrap_or_default();
            r.raster_part(&m, 2.0)?;
        }
        let message = thread_cpu() - t;
        println!(
            "CPU per badge: whole {:.2} ms, label part {:.2} ms, message part {:.2} ms",
            whole / 0.3,
            label / 0.3,
            message / 0.3
        );
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

/// CPU seconds of this thread.
pub fn thread_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}
