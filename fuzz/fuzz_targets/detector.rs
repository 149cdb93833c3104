//! Fuzzes the normaliser, the detector and the guard on arbitrary (lossily decoded) text.
#![no_main]

use std::sync::LazyLock;

use genesis_security::{Checkpoint, Guard, InjectionDetector, normalize::normalize};
use libfuzzer_sys::fuzz_target;

static DETECTOR: LazyLock<InjectionDetector> = LazyLock::new(InjectionDetector::default);
static GUARD: LazyLock<Guard> = LazyLock::new(Guard::default);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = normalize(&text);
    let scan = DETECTOR.scan(&text);
    assert!((0.0..=1.0).contains(&scan.score));
    assert_eq!(
        scan.is_injection(),
        scan.score >= DETECTOR.config().threshold
    );
    let _ = GUARD.screen(Checkpoint::ToolOutput, &text);
    let _ = genesis_security::sanitize_for_prompt(&text);
    let _ = genesis_security::redact(&text);
});
