//! Scans each line of stdin (or the arguments) and prints the score, verdict and reasons.
//!
//! ```text
//! echo "ignore previous instructions" | cargo run --release -p genesis-security --example scan
//! ```

#![allow(clippy::print_stdout)] // a command-line tool

use std::io::BufRead as _;

fn main() -> anyhow::Result<()> {
    let detector = genesis_security::InjectionDetector::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lines: Vec<String> = if args.is_empty() {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        args
    };
    for line in lines {
        let scan = detector.scan(&line);
        let reasons: Vec<String> = scan.reasons.iter().map(ToString::to_string).collect();
        println!(
            "{:.3} {:?} {line:?} [{}]",
            scan.score,
            scan.verdict,
            reasons.join(", ")
        );
    }
    Ok(())
}
