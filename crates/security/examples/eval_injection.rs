//! Evaluates the injection detector on the dev data and prints a report.
//!
//! ```text
//! cargo run --release -p genesis-security --example eval_injection -- [data dir]
//! ```
//!
//! Reports, all on data the scoring model did not train on:
//! - grouped 5-fold cross-validation (near-duplicate groups never straddle folds): recall
//!   overall, per source and per attack type, false-positive rate per benign source, at a
//!   threshold tuned on out-of-fold benign scores;
//! - the false-positive rate of the shipped model on held-out TaskBench requests;
//! - leave-one-source-out recall (all attacks of one source removed from training);
//! - ablations: rules only, model only;
//! - the rows each rule fires on (attacks, benign rows, benign templates), and the rows
//!   each of the normaliser's decodings fires on.
//!
//! Error analysis: `GENESIS_SHOW_ERRORS=1` prints the out-of-fold errors;
//! `GENESIS_SHOW_DECODED=1` the benign rows a normaliser decoding fires on;
//! `GENESIS_MISSES=/tmp/misses.txt` appends every leave-one-source-out miss (its rules, its
//! model logit relative to the threshold and its text) to that file, outside the repository.

#![allow(clippy::print_stdout)] // a command-line tool printing its report

mod common;

use std::collections::BTreeMap;

use anyhow::Result;
use common::{FOLDS, Prepared, TARGET_FPR, sigmoid};
use genesis_security::InjectionDetector;

fn pct(k: usize, n: usize) -> String {
    if n == 0 {
        return "n/a".to_owned();
    }
    format!("{:.1}% ({k}/{n})", 100.0 * k as f64 / n as f64)
}

/// Recall per source and per attack type, FPR per benign source, for `logits >= t`.
fn breakdown(p: &Prepared, logits: &[f64], t: f64, rows: impl Fn(usize) -> bool) {
    let mut by_source: BTreeMap<(bool, String), (usize, usize)> = BTreeMap::new();
    let mut by_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for i in (0..p.rows.len()).filter(|&i| rows(i) && !logits[i].is_nan()) {
        let r = &p.rows[i];
        let hit = logits[i] >= t;
        let e = by_source.entry((r.label, r.source.clone())).or_default();
        e.0 += usize::from(hit);
        e.1 += 1;
        if r.label {
            let e = by_type.entry(r.attack_type.clone()).or_default();
            e.0 += usize::from(hit);
            e.1 += 1;
        }
    }
    println!("| set | source | flagged |\n|---|---|---|");
    for ((label, source), (k, n)) in &by_source {
        let set = if *label {
            "attack (recall)"
        } else {
            "benign (FPR)"
        };
        println!("| {set} | {source} | {} |", pct(*k, *n));
    }
    for (ty, (k, n)) in &by_type {
        println!("| attack type (recall) | {ty} | {} |", pct(*k, *n));
    }
}

/// Rows each rule fires on (shipped detector, all rules on): attacks, benign rows of the
/// data (pool and held-out, the project's own templates apart) and the templates, so a new
/// rule's benign hits are visible.
fn rule_hits(p: &Prepared) {
    let detector = InjectionDetector::default();
    let mut hits: BTreeMap<String, [usize; 3]> = InjectionDetector::rule_names()
        .map(|n| (n.to_owned(), [0; 3]))
        .collect();
    for r in &p.rows {
        let col = if r.label {
            0
        } else if common::is_synthetic(r) {
            2
        } else {
            1
        };
        let scan = detector.scan(&r.text);
        let mut names: Vec<&str> = scan
            .reasons
            .iter()
            .filter(|x| x.kind == genesis_security::ReasonKind::Rule)
            .map(|x| x.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            hits.entry(name.to_owned()).or_default()[col] += 1;
        }
    }
    println!("\n| rule | attacks | benign rows (data) | benign templates |\n|---|---|---|---|");
    for (name, [a, b, s]) in &hits {
        println!("| {name} | {a} | {b} | {s} |");
    }
}

/// Rows on which each of the normaliser's decodings fires (attacks, benign rows of the data,
/// benign templates), so a decoding that reaches ordinary text is visible; with
/// `GENESIS_SHOW_DECODED=1`, the benign rows themselves.
fn decoding_hits(p: &Prepared) {
    use genesis_security::normalize::{NormalizeStats, normalize_scanned};
    /// How often one decoding fired on a row.
    type Count = fn(&NormalizeStats) -> usize;
    let kinds: [(&str, Count); 4] = [
        ("base64/hex payload", |s| s.decoded_payloads),
        ("rot13 span", |s| s.rot13_spans),
        ("reversed span", |s| s.reversed_spans),
        ("look-alike letters (> 2)", |s| {
            if s.confusables > 2 { s.confusables } else { 0 }
        }),
    ];
    let mut hits = [[0usize; 3]; 4];
    let show = std::env::var("GENESIS_SHOW_DECODED").is_ok();
    for r in &p.rows {
        let col = if r.label {
            0
        } else if common::is_synthetic(r) {
            2
        } else {
            1
        };
        let stats = normalize_scanned(&r.text).stats;
        for (k, (name, count)) in kinds.iter().enumerate() {
            if count(&stats) > 0 {
                hits[k][col] += 1;
                if show && col == 1 {
                    let text: String = r.text.chars().take(150).collect();
                    println!("DECODED {name} src={} {text:?}", r.source);
                }
            }
        }
    }
    println!(
        "\n| normaliser decoding | attacks | benign rows (data) | benign templates |\n|---|---|---|---|"
    );
    for ((name, _), [a, b, s]) in kinds.iter().zip(hits) {
        println!("| {name} | {a} | {b} | {s} |");
    }
}

fn summary(p: &Prepared, logits: &[f64], t: f64) -> (usize, usize, usize, usize, usize, usize) {
    let (mut tp, mut pos, mut fp_dev, mut neg_dev, mut fp_tb, mut neg_tb) = (0, 0, 0, 0, 0, 0);
    for i in (0..p.rows.len()).filter(|&i| !logits[i].is_nan() && !common::is_synthetic(&p.rows[i]))
    {
        let r = &p.rows[i];
        let hit = usize::from(logits[i] >= t);
        if r.label {
            tp += hit;
            pos += 1;
        } else if !common::is_dev_benign(r) {
            fp_tb += hit;
            neg_tb += 1;
        } else {
            fp_dev += hit;
            neg_dev += 1;
        }
    }
    (tp, pos, fp_dev, neg_dev, fp_tb, neg_tb)
}

fn print_summary(name: &str, p: &Prepared, logits: &[f64], t: f64) {
    let (tp, pos, fp_dev, neg_dev, fp_tb, neg_tb) = summary(p, logits, t);
    println!(
        "| {name} | {} | {} | {} | {} |",
        pct(tp, pos),
        pct(fp_dev + fp_tb, neg_dev + neg_tb),
        pct(fp_dev, neg_dev),
        pct(fp_tb, neg_tb)
    );
}

fn main() -> Result<()> {
    let dir = common::data_dir();
    let p = common::prepare(&dir)?;
    let config = common::train_config();
    let n_groups = {
        let mut g = p.groups.clone();
        g.sort_unstable();
        g.dedup();
        g.len()
    };
    let attacks = p.rows.iter().filter(|r| r.label).count();
    let synthetic = p.rows.iter().filter(|r| common::is_synthetic(r)).count();
    println!(
        "({synthetic} of the benign rows are the project's own role-play templates: trained on, \
         never used to tune the threshold, not counted in any FPR below)\n"
    );
    println!("# Injection detector evaluation\n");
    println!(
        "data: {} rows ({attacks} attacks, {} benign) in {n_groups} near-duplicate groups; \
         {} held-out ordinary requests (TaskBench, UltraTool, GSM8K, MMLU); {FOLDS}-fold grouped CV; target FPR {:.2}%\n",
        p.rows.len(),
        p.rows.len() - attacks,
        p.heldout.iter().filter(|h| **h).count(),
        TARGET_FPR * 100.0
    );

    // 1. Grouped cross-validation.
    let (oof, oof_model) = p.oof_logits(&config);
    let t = p.tune(&oof);
    println!("## Grouped {FOLDS}-fold cross-validation (out-of-fold scores)\n");
    println!(
        "threshold tuned on out-of-fold benign pool scores: score {:.4}\n",
        sigmoid(t)
    );
    println!(
        "| detector | recall | FPR (all benign) | FPR (injection-set benign) | FPR (ordinary traffic) |\n|---|---|---|---|---|"
    );
    print_summary("rules + model (shipped design)", &p, &oof, t);
    let t_model = p.tune(&oof_model);
    print_summary("model only (own tuned threshold)", &p, &oof_model, t_model);
    let rules: Vec<f64> = (0..p.rows.len())
        .map(|i| {
            if p.heldout[i] {
                f64::NAN
            } else {
                f64::from(p.docs[i].rule_logit)
            }
        })
        .collect();
    print_summary("rules only, any rule", &p, &rules, 1.0);
    print_summary("rules only, weight >= 8", &p, &rules, 8.0);
    // Trade-off against the hard benign rows alone.
    let dev_benign: Vec<f64> = (0..p.rows.len())
        .filter(|&i| !p.heldout[i] && common::is_dev_benign(&p.rows[i]))
        .map(|i| sigmoid(oof[i]))
        .collect();
    println!("\nrecall when the threshold is set by the injection-set benign rows alone:\n");
    for fpr in [0.01, 0.02, 0.05, 0.1] {
        let tt = common::logit(genesis_security::training::threshold_for_fpr(
            &dev_benign,
            fpr,
        ));
        let (tp, pos, fp_dev, neg_dev, fp_o, neg_o) = summary(&p, &oof, tt);
        println!(
            "- FPR ≤ {:.0}% on injection-set benign: recall {}, injection-set FPR {}, ordinary FPR {}",
            fpr * 100.0,
            pct(tp, pos),
            pct(fp_dev, neg_dev),
            pct(fp_o, neg_o)
        );
    }
    if std::env::var("GENESIS_SHOW_ERRORS").is_ok() {
        for i in (0..p.rows.len()).filter(|&i| !p.heldout[i] && !oof[i].is_nan()) {
            let r = &p.rows[i];
            if r.label != (oof[i] >= t) {
                let text: String = r.text.chars().take(150).collect();
                println!(
                    "ERR label={} src={} p={:.3} rules={:.1} model={:.2} {text:?}",
                    r.label,
                    r.source,
                    sigmoid(oof[i] - t),
                    p.docs[i].rule_logit,
                    oof_model[i] - t,
                );
            }
        }
    }
    println!();
    breakdown(&p, &oof, t, |i| !p.heldout[i]);
    rule_hits(&p);
    decoding_hits(&p);

    // 2. Held-out ordinary-traffic FPR with the shipped detector (trained without these rows).
    let detector = InjectionDetector::default();
    let held: Vec<usize> = (0..p.rows.len()).filter(|&i| p.heldout[i]).collect();
    let started = std::time::Instant::now();
    let flagged: Vec<usize> = held
        .iter()
        .copied()
        .filter(|&i| detector.scan(&p.rows[i].text).is_injection())
        .collect();
    let elapsed = started.elapsed();
    println!("\n## Held-out ordinary requests, shipped detector (default threshold 0.5)\n");
    println!("false-positive rate: {}", pct(flagged.len(), held.len()));
    let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for &i in &held {
        let e = per.entry(p.rows[i].source.as_str()).or_default();
        e.1 += 1;
        e.0 += usize::from(flagged.contains(&i));
    }
    for (s, (k, n)) in per {
        println!("- {s}: {}", pct(k, n));
    }
    for &i in flagged.iter().take(10) {
        let text: String = p.rows[i].text.chars().take(120).collect();
        println!("- false positive: {text:?}");
    }
    println!(
        "mean scan time: {:.1} µs per request (mean {} chars)",
        elapsed.as_secs_f64() * 1e6 / held.len().max(1) as f64,
        held.iter()
            .map(|&i| p.rows[i].text.chars().count())
            .sum::<usize>()
            / held.len().max(1)
    );

    // 3. Hand-written probes, scored by the model `train_injection` would ship.
    let shipped = p.train_on(|i| !p.heldout[i], &config);
    let probe = |texts: &[&str], want: bool| -> usize {
        let mut ok = 0;
        for text in texts {
            let doc = genesis_security::training::featurize_with(text, &p.charlm);
            let score = sigmoid(doc.logit(&shipped) - t);
            ok += usize::from((score >= 0.5) == want);
            if (score >= 0.5) != want || common::env_f64("GENESIS_PROBE_ALL", 0.0) > 0.0 {
                println!(
                    "- probe {}: {score:.3} {text:?}",
                    if want { "attack" } else { "benign" }
                );
            }
        }
        ok
    };
    println!("\n## Hand-written probes (model trained on the whole pool)\n");
    let ok_b = probe(common::PROBE_BENIGN, false);
    let ok_a = probe(common::PROBE_ATTACKS, true);
    println!(
        "benign passed: {}; attacks flagged: {}",
        pct(ok_b, common::PROBE_BENIGN.len()),
        pct(ok_a, common::PROBE_ATTACKS.len())
    );
    // Extra probe lists, one text per line: GENESIS_PROBE_FILES=benign.txt:attacks.txt.
    if let Ok(files) = std::env::var("GENESIS_PROBE_FILES")
        && let Some((benign, attacks)) = files.split_once(':')
    {
        for (path, want) in [(benign, false), (attacks, true)] {
            let text = std::fs::read_to_string(path)?;
            let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let scores: Vec<f64> = lines
                .iter()
                .map(|x| {
                    sigmoid(
                        genesis_security::training::featurize_with(x, &p.charlm).logit(&shipped)
                            - t,
                    )
                })
                .collect();
            let ok = probe(&lines, want);
            let extreme = if want {
                scores.iter().copied().fold(f64::INFINITY, f64::min)
            } else {
                scores.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            };
            println!(
                "{path}: {} as expected; {} score {extreme:.3}",
                pct(ok, lines.len()),
                if want { "lowest" } else { "highest" }
            );
        }
    }
    // Held-out software-team requests (crates/security/data/heldout_engineering_probes.txt):
    // never trained on. Scored by the model `train_injection` ships.
    let eng = common::engineering_probes();
    let eng_refs: Vec<&str> = eng.iter().map(String::as_str).collect();
    println!("\n## Held-out engineering probes (never trained on)\n");
    let ok_e = probe(&eng_refs, false);
    println!(
        "engineering requests flagged (FPR): {}",
        pct(eng.len() - ok_e, eng.len())
    );
    // Round SB11: held-out agent outputs and multilingual requests (must pass) and injected
    // outputs (must stay flagged), never trained on; then what a stricter threshold for
    // the agent-output checkpoint would do to them.
    let sets = [
        ("agent outputs", common::OUTPUT_PROBES, false),
        ("multilingual requests", common::MULTILINGUAL_PROBES, false),
        (
            "injected agent outputs",
            common::INJECTED_OUTPUT_PROBES,
            true,
        ),
    ];
    let mut scored: Vec<Vec<(f64, bool)>> = Vec::new();
    for (name, file, want) in sets {
        let texts = common::probe_lines(file);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        println!("\n## Held-out {name} (never trained on)\n");
        let ok = probe(&refs, want);
        println!(
            "{name} {}: {}",
            if want {
                "flagged (recall)"
            } else {
                "flagged (FPR)"
            },
            if want {
                pct(ok, texts.len())
            } else {
                pct(texts.len() - ok, texts.len())
            }
        );
        scored.push(
            texts
                .iter()
                .map(|x| {
                    let doc = genesis_security::training::featurize_with(x, &p.charlm);
                    (sigmoid(doc.logit(&shipped) - t), doc.rule_logit >= 1.0)
                })
                .collect(),
        );
    }
    println!(
        "\nagent-output threshold T (a: score >= T; b: score >= 0.5 with a rule, or >= T \
         without one); last column: the data's attacks, out of fold, as if each were an \
         agent output:\n\n| T | outputs flagged a / b | injected flagged a / b | CV attacks \
         flagged a / b |\n|---|---|---|---|"
    );
    let cv_attacks: Vec<(f64, bool)> = (0..p.rows.len())
        .filter(|&i| p.rows[i].label && !oof[i].is_nan())
        .map(|i| (sigmoid(oof[i] - t), p.docs[i].rule_logit >= 1.0))
        .collect();
    for th in [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99] {
        let count = |v: &[(f64, bool)]| {
            let a = v.iter().filter(|(s, _)| *s >= th).count();
            let b = v
                .iter()
                .filter(|(s, r)| *s >= 0.5 && (*r || *s >= th))
                .count();
            (a, b, v.len())
        };
        let (oa, ob, on) = count(&scored[0]);
        let (ia, ib, inn) = count(&scored[2]);
        let (ca, cb, cn) = count(&cv_attacks);
        println!("| {th} | {oa} / {ob} of {on} | {ia} / {ib} of {inn} | {ca} / {cb} of {cn} |");
    }
    if common::env_f64("GENESIS_QUICK", 0.0) > 0.0 {
        return Ok(());
    }

    // 4. Leave-one-source-out recall.
    println!(
        "\n## Leave-one-source-out recall (source's attacks never trained on; same threshold)\n"
    );
    println!(
        "| held-out source | recall | model-only recall | rules-only (any rule) |\n|---|---|---|---|"
    );
    let mut sources: Vec<String> = p
        .rows
        .iter()
        .filter(|r| r.label)
        .map(|r| r.source.clone())
        .collect();
    sources.sort();
    sources.dedup();
    let (mut tot_k, mut tot_n) = (0, 0);
    for s in &sources {
        let model = p.train_on(
            |i| !(p.heldout[i] || (p.rows[i].label && &p.rows[i].source == s)),
            &config,
        );
        let idx: Vec<usize> = (0..p.rows.len())
            .filter(|&i| p.rows[i].label && &p.rows[i].source == s)
            .collect();
        let k = idx
            .iter()
            .filter(|&&i| p.docs[i].logit(&model) >= t)
            .count();
        let km = idx
            .iter()
            .filter(|&&i| p.docs[i].model_logit(&model) >= t_model)
            .count();
        let kr = idx.iter().filter(|&&i| p.docs[i].rule_logit >= 1.0).count();
        if let Ok(path) = std::env::var("GENESIS_MISSES") {
            // Error analysis: the source's missed attacks, appended to a file outside the repo.
            let mut out = String::new();
            for &i in idx.iter().filter(|&&i| p.docs[i].logit(&model) < t) {
                let rules: Vec<String> = detector
                    .scan(&p.rows[i].text)
                    .reasons
                    .iter()
                    .filter(|r| r.kind == genesis_security::ReasonKind::Rule)
                    .map(ToString::to_string)
                    .collect();
                let text: String = p.rows[i].text.chars().take(300).collect();
                out.push_str(&format!(
                    "LOSO {s} rules={:.1} model={:.2} {rules:?} {text:?}\n",
                    p.docs[i].rule_logit,
                    p.docs[i].model_logit(&model) - t,
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            std::io::Write::write_all(&mut f, out.as_bytes())?;
        }
        tot_k += k;
        tot_n += idx.len();
        println!(
            "| {s} | {} | {} | {} |",
            pct(k, idx.len()),
            pct(km, idx.len()),
            pct(kr, idx.len())
        );
    }
    println!("| **all (micro)** | {} | | |", pct(tot_k, tot_n));

    // 5. Role-play sanity check: awesome-chatgpt-prompts "act as" requests (benign).
    let role: Vec<usize> = (0..p.rows.len())
        .filter(|&i| {
            !p.rows[i].label
                && !common::is_synthetic(&p.rows[i])
                && p.rows[i].text.to_lowercase().contains("act as")
        })
        .collect();
    let k = role
        .iter()
        .filter(|&&i| !oof[i].is_nan() && oof[i] >= t)
        .count();
    println!(
        "\nbenign role-play prompts containing \"act as\" flagged (out-of-fold): {}",
        pct(k, role.len())
    );
    Ok(())
}
