//! Where the builder's CPU-heavy work runs: a function over many items on all cores
//! (pages, badges, rasters, parsing, hashing), and whole steps on tokio's blocking pool,
//! off the async runtime. The lowest floor of the builder.

/// `f` over `items` on all cores, in order. Work is handed out in small blocks, so a
/// slow item does not hold up a whole share.
pub(crate) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16)
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(&f).collect();
    }
    let block = (items.len() / (threads * 8)).clamp(1, 64);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut blocks: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(block, std::sync::atomic::Ordering::Relaxed);
                        if start >= items.len() {
                            break done;
                        }
                        let end = (start + block).min(items.len());
                        done.push((start, items[start..end].iter().map(&f).collect()));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(v) => v,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    blocks.sort_unstable_by_key(|(start, _)| *start);
    blocks.into_iter().flat_map(|(_, v)| v).collect()
}

/// A build step handed to the blocking pool was cancelled: the runtime is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("a build step on the blocking pool was cancelled (the runtime is shutting down)")]
pub struct Cancelled;

/// Run the CPU-heavy `f` (parsing, modelling, rendering, hashing) on tokio's blocking
/// pool, so that the runtime's workers keep serving everything else meanwhile. A panic
/// in `f` is resumed here, as if `f` had run inline.
pub(crate) async fn off_runtime<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Cancelled> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(r),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(Cancelled),
        },
    }
}
