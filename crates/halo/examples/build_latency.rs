//! Start-up cost check: load, index and route one task on a generated 10,000-agent
//! JSONL catalogue (the generator of `routing/synthetic_10k` in the benches).
//!
//! ```text
//! cargo run --release -p genesis-halo --example build_latency
//! ```

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::Instant;

use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{AgentRegistry, JsonlMode, Router, RoutingRules};

fn synthetic_jsonl(n: usize) -> String {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let word = |next: &mut dyn FnMut() -> u64| {
        let mut v = next() % 2000;
        let mut w = String::from("x");
        for _ in 0..3 {
            w.push(char::from(b'a' + (v % 26) as u8));
            v /= 26;
        }
        w
    };
    let mut out = String::new();
    for i in 0..n {
        let desc: Vec<String> = (0..8).map(|_| word(&mut next)).collect();
        let ex1: Vec<String> = (0..6).map(|_| word(&mut next)).collect();
        let ex2: Vec<String> = (0..6).map(|_| word(&mut next)).collect();
        let _ = writeln!(
            out,
            "{{\"id\":\"agent_{i}\",\"desc\":\"{}\",\"examples\":[\"{}\",\"{}\"]}}",
            desc.join(" "),
            ex1.join(" "),
            ex2.join(" ")
        );
    }
    out
}

fn main() -> anyhow::Result<()> {
    let jsonl = synthetic_jsonl(10_000);
    let task = Task::new(
        TaskId::new("t"),
        TaskKind::Generic,
        "xabc xkqa xzzb xmma xbcd xqrs",
    );
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let (reg, _) = AgentRegistry::from_jsonl_str(&jsonl, JsonlMode::Fail)?;
        let router = Router::new(reg, RoutingRules::empty())?;
        std::hint::black_box(router.route(&task));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "10,000 agents load + index + route one task: {:.1} ms (best of 5)",
        best * 1e3
    );
    Ok(())
}
