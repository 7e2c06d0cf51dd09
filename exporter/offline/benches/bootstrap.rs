//! Bootstrap speed on one core: B = 500 percentile CIs for n = 300, 10 000 and 100 000.
//! Target: ≤ 30 ms for the median CI at n = 10 000.
//! Run: `cargo bench -p clockpath-offline --bench bootstrap`. Prints figures, asserts nothing.

use std::time::Instant;

use clockpath_offline::stats::{self, Bootstrap};

fn data(n: usize) -> Vec<f64> {
    // Log-normal-ish deterministic data, like segment latencies in ns.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            1_000.0 * (1.0 + 4.0 * u * u) + (x % 97) as f64
        })
        .collect()
}

fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let boot = Bootstrap::default();
    println!("bootstrap, B = {}, level {}, one thread (median of repeated runs):", boot.resamples, boot.level);
    println!(
        "  {:>8}  {:>14}  {:>18}  {:>16}  {:>22}",
        "n", "median CI ms", "median diff CI ms", "var ratio CI ms", "regression (2 pred.) ms"
    );
    for n in [300usize, 10_000, 100_000] {
        let a = data(n);
        let b: Vec<f64> = a.iter().rev().map(|x| x * 1.1).collect();
        let reps = if n >= 100_000 { 5 } else { 21 };
        let m = time_ms(reps, || {
            std::hint::black_box(stats::median_ci(&a, &boot).unwrap());
        });
        let d = time_ms(reps, || {
            std::hint::black_box(stats::median_difference_ci(&a, &b, &boot).unwrap());
        });
        let v = time_ms(reps, || {
            std::hint::black_box(stats::variance_ratio_ci(&a, &b, &boot).unwrap());
        });
        let c1: Vec<f64> = a.iter().map(|x| x * 0.4).collect();
        let c2: Vec<f64> = b.iter().map(|x| x * 0.6).collect();
        let y: Vec<f64> = c1.iter().zip(&c2).map(|(p, q)| p + q + 3.0).collect();
        let names = ["s1".to_string(), "s2".to_string()];
        let r = time_ms(reps.min(5), || {
            std::hint::black_box(stats::bootstrap_regression(&y, &[c1.clone(), c2.clone()], &names, &boot).unwrap());
        });
        println!("  {n:>8}  {m:>14.2}  {d:>18.2}  {v:>16.2}  {r:>22.2}");
    }
}
