//! What the cooperative budget costs a task that never waits: a loop of
//! `recv().await` over an unbounded channel filled beforehand, timed per item, with the
//! budget (a plain task: it yields every 128 items) and without it
//! (`task::unconstrained`: it never yields), in interleaved rounds on one worker.
//!
//! `cargo run --release -p pagekeep-executor --example coop_cost -- [ITEMS] [ROUNDS]`

use std::time::Instant;

use pagekeep_executor::sync::mpsc;

/// How a round's loop runs.
#[derive(Clone, Copy)]
enum Variant {
    /// A plain task: the budget makes it yield every 128 items.
    Budget,
    /// In `task::unconstrained`: it never yields.
    Unconstrained,
    /// In `task::unconstrained`, with a `yield_now` every 128 items.
    UnconstrainedYielding,
}

/// Nanoseconds per item of one round's receive loop.
async fn drain(items: usize, variant: Variant) -> f64 {
    let (sender, mut receiver) = mpsc::unbounded_channel();
    for item in 0..items {
        sender.send(item).unwrap();
    }
    drop(sender);
    let drain = async move {
        let started = Instant::now();
        let mut sum = 0usize;
        let mut count = 0u32;
        while let Some(item) = receiver.recv().await {
            sum = sum.wrapping_add(item);
            count += 1;
            if matches!(variant, Variant::UnconstrainedYielding) && count.is_multiple_of(128) {
                pagekeep_executor::yield_now().await;
            }
        }
        std::hint::black_box(sum);
        started.elapsed()
    };
    let elapsed = match variant {
        Variant::Budget => drain.await,
        Variant::Unconstrained | Variant::UnconstrainedYielding => {
            pagekeep_executor::task::unconstrained(drain).await
        }
    };
    elapsed.as_nanos() as f64 / items as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let items: usize = args
        .next()
        .map_or(1_000_000, |arg| arg.parse().expect("ITEMS"));
    let rounds: usize = args.next().map_or(11, |arg| arg.parse().expect("ROUNDS"));
    let runtime = pagekeep_executor::Runtime::builder().workers(1).build()?;
    let variants = [
        Variant::Budget,
        Variant::Unconstrained,
        Variant::UnconstrainedYielding,
    ];
    let mut times: [Vec<f64>; 3] = Default::default();
    // One warm-up round of each, then interleaved rounds.
    for round in 0..=rounds {
        for (variant, times) in variants.iter().zip(&mut times) {
            let time = runtime.block_on(drain(items, *variant));
            if round > 0 {
                times.push(time);
            }
        }
    }
    let [budget, unconstrained, yielding] = times.map(|mut times| median(&mut times));
    println!(
        "{items} items, {rounds} rounds, medians in ns/item: with the budget {budget:.2}, \
         unconstrained {unconstrained:.2} (ratio {:.3}), unconstrained with a yield_now \
         every 128 items {yielding:.2} (budget / that: {:.3})",
        budget / unconstrained,
        budget / yielding
    );
    Ok(())
}
