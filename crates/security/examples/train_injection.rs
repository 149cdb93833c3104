//! Trains the shipped injection model and writes `crates/security/model/injection.bin`.
//!
//! ```text
//! cargo run --release -p genesis-security --example train_injection -- [data dir]
//! ```
//!
//! Deterministic: fixed seed, fixed fold assignment, so the same data gives the same file.
//! The data dir defaults to `../shared/data`; see `examples/common/mod.rs` for the protocol.

#![allow(clippy::print_stdout)] // a command-line tool reporting progress

mod common;

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let dir = common::data_dir();
    let started = std::time::Instant::now();
    let p = common::prepare(&dir)?;
    let config = common::train_config();
    let pool = p.heldout.iter().filter(|h| !**h).count();
    println!(
        "rows {} (pool {pool}, held-out ordinary requests {}), groups {}",
        p.rows.len(),
        p.rows.len() - pool,
        {
            let mut g = p.groups.clone();
            g.sort_unstable();
            g.dedup();
            g.len()
        }
    );
    // Threshold from out-of-fold scores, for the target FPR on benign pool rows.
    let (oof, _) = p.oof_logits(&config);
    let t = p.tune(&oof);
    println!(
        "tuned threshold: logit {t:.4} (score {:.4})",
        common::sigmoid(t)
    );
    // Final model on the whole pool, intercept shifted so the tuned threshold is score 0.5.
    let model = p.train_on(|i| !p.heldout[i], &config);
    let model = model.clone().with_bias(model.bias() - t as f32);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("model/injection.bin");
    let bytes = model.to_bytes();
    std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    let charlm_path = path.with_file_name("charlm.bin");
    std::fs::write(&charlm_path, p.charlm.to_bytes())
        .with_context(|| format!("writing {}", charlm_path.display()))?;
    println!(
        "wrote {} (gibberish levels {:?}, tail {})",
        charlm_path.display(),
        p.charlm.levels(),
        p.charlm.tail_threshold()
    );
    let nonzero = bytes[20..].chunks_exact(2).filter(|c| c != &[0, 0]).count();
    println!(
        "wrote {} ({} bytes, {nonzero} non-zero weights, bias {:.4}) in {:.1?}",
        path.display(),
        bytes.len(),
        model.bias(),
        started.elapsed()
    );
    Ok(())
}
