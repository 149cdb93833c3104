//! Integration tests: the shipped defaults, hot reload on real files, sticky bucketing
//! invariants (proptest) and a rollout driven end to end into a store.

// Helpers outside `#[test]` functions are test code too (clippy.toml only exempts tests).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use genesis_feature_flags::{
    BUCKETS, Flag, FlagError, FlagStore, HealthSample, Percent, Reason, ReloadOutcome,
    RolloutAction, RolloutConfig, RolloutController, SharedFlags, Strategy, Timestamp, bucket,
};
use proptest::prelude::*;

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

/// A fresh file path under the system temp dir, unique to this process and call, not
/// there yet; the file is removed when dropped (the test passed or failed).
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "genesis-flags-{}-{tag}-{n}.json",
            std::process::id()
        ));
        // Left by a crashed run of a process that had this id: not this test's file.
        let _ = std::fs::remove_file(&path);
        TempFile(path)
    }
    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn shipped_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/feature_flags.json")
}

#[test]
fn shipped_file_loads_and_matches_builtin_defaults() {
    let loaded = FlagStore::load(shipped_path()).unwrap();
    assert_eq!(loaded, FlagStore::builtin_defaults().unwrap());
    assert!(loaded.len() >= 11);
    let now = SystemTime::now();
    assert!(loaded.is_enabled("orchestration_enabled", "anyone", now));
    assert!(!loaded.is_enabled("emergency_shutdown", "anyone", now));
}

#[test]
fn shipped_progressive_example_ramps_over_december_2026() {
    let store = FlagStore::builtin_defaults().unwrap();
    let flag = store.get("new_router_rollout").unwrap();
    let pct = |s: &str| {
        flag.strategy
            .percent_at(Timestamp::parse_rfc3339(s).unwrap())
            .unwrap()
            .as_f64()
    };
    assert_eq!(pct("2026-11-30T00:00:00Z"), 0.0);
    assert_eq!(pct("2026-12-10T00:00:00Z"), 25.0);
    assert_eq!(pct("2026-12-20T00:00:00Z"), 50.0);
    assert_eq!(pct("2027-02-01T00:00:00Z"), 100.0);
}

#[test]
fn load_reports_missing_file_with_path() {
    let missing = TempFile::new("missing");
    let err = FlagStore::load(&missing.0).unwrap_err();
    assert!(matches!(err, FlagError::Read { .. }));
    assert!(err.to_string().contains("genesis-flags-"), "{err}");
}

#[test]
fn hot_reload_swaps_good_files_and_keeps_old_flags_on_bad_ones() {
    let file = TempFile::new("reload");
    file.write(r#"{"flags":[{"name":"halo_routing","enabled":true},{"name":"emergency_shutdown","enabled":false}]}"#);
    let shared = SharedFlags::load(&file.0).unwrap();
    let now = SystemTime::now();
    assert!(shared.is_enabled("halo_routing", "u", now));
    assert_eq!(
        shared.reload_if_changed().unwrap(),
        ReloadOutcome::Unchanged
    );

    // The kill switch is pulled through the environment; it must survive reloads.
    let applied = shared
        .apply_env_overrides([("EMERGENCY_SHUTDOWN".to_owned(), "true".to_owned())])
        .unwrap();
    assert_eq!(applied.len(), 1);

    // A new definition (different size, so detection never depends on mtime resolution).
    file.write(r#"{"flags":[{"name":"halo_routing","enabled":false,"description":"off now"},{"name":"emergency_shutdown","enabled":false}]}"#);
    assert_eq!(
        shared.reload_if_changed().unwrap(),
        ReloadOutcome::Reloaded { flags: 2 }
    );
    assert!(!shared.is_enabled("halo_routing", "u", now));
    assert!(shared.is_enabled("emergency_shutdown", "u", now));

    // A broken file: error, old flags stay.
    let before = shared.snapshot();
    file.write(r#"{"flags":[{"name":"halo_routing","enabled":tru"#);
    let err = shared.reload_if_changed().unwrap_err();
    assert!(matches!(err, FlagError::Parse { .. }), "{err}");
    assert_eq!(*shared.snapshot(), *before);

    // A file that drops the overridden kill switch is refused too.
    file.write(r#"{"flags":[{"name":"halo_routing","enabled":true}]}"#);
    let err = shared.reload_if_changed().unwrap_err();
    assert!(err.to_string().contains("EMERGENCY_SHUTDOWN"), "{err}");
    assert!(shared.is_enabled("emergency_shutdown", "u", now));

    // Fixed again: picked up on the next call.
    file.write(r#"{"flags":[{"name":"halo_routing","enabled":true},{"name":"emergency_shutdown","enabled":false},{"name":"extra","enabled":true}]}"#);
    assert_eq!(
        shared.reload_if_changed().unwrap(),
        ReloadOutcome::Reloaded { flags: 3 }
    );
    assert!(shared.is_enabled("extra", "u", now));
}

#[test]
fn rewriting_identical_content_is_unchanged() {
    let file = TempFile::new("same");
    let text = r#"{"flags":[{"name":"a","enabled":true}]}"#;
    file.write(text);
    let shared = SharedFlags::load(&file.0).unwrap();
    std::fs::write(&file.0, format!("{text} ")).unwrap();
    std::fs::write(&file.0, text).unwrap();
    assert_eq!(
        shared.reload_if_changed().unwrap(),
        ReloadOutcome::Unchanged
    );
}

#[test]
fn env_override_of_unknown_value_is_rejected_with_var_and_value() {
    let mut store = FlagStore::builtin_defaults().unwrap();
    let err = store
        .apply_env_overrides([("READ_ONLY_MODE".to_owned(), "sometimes".to_owned())])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid value \"sometimes\" for environment variable READ_ONLY_MODE: expected \
         true/false/1/0/yes/no/on/off or a percentage like 25%"
    );
}

#[test]
fn rollout_drives_a_flag_and_keeps_subjects_sticky() {
    let mut store = FlagStore::from_flags([Flag::new("new_router_rollout", false)]).unwrap();
    let controller = RolloutController::try_new(RolloutConfig {
        dwell: Duration::from_secs(300),
        ..RolloutConfig::default()
    })
    .unwrap();
    let subjects: Vec<String> = (0..5_000).map(|i| format!("user-{i}")).collect();
    let healthy = HealthSample {
        error_rate: 0.002,
        p95_latency: Duration::from_millis(200),
        requests: 10_000,
        tasks: None,
    };
    let mut now = 1_800_000_000;
    let mut state = controller.start("new_router_rollout", at(now)).unwrap();
    state.apply_to(&mut store).unwrap();
    let mut previously_in: Vec<bool> = vec![false; subjects.len()];
    loop {
        let on: Vec<bool> = subjects
            .iter()
            .map(|s| store.is_enabled("new_router_rollout", s, at(now)))
            .collect();
        // Once in, always in as the percentage grows.
        for (was, is) in previously_in.iter().zip(&on) {
            assert!(!was || *is);
        }
        let share = on.iter().filter(|b| **b).count() as f64 / subjects.len() as f64 * 100.0;
        let want = state.percent.as_f64();
        assert!((share - want).abs() <= 2.0, "share {share} vs {want}");
        previously_in = on;
        now += 300;
        match controller
            .tick(&mut state, Some(&healthy), at(now))
            .unwrap()
        {
            RolloutAction::Advance { .. } => state.apply_to(&mut store).unwrap(),
            RolloutAction::Complete => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        subjects
            .iter()
            .all(|s| store.is_enabled("new_router_rollout", s, at(now)))
    );

    // A breach sends everyone back to the old path.
    let mut state = controller.start("new_router_rollout", at(now)).unwrap();
    let broken = HealthSample {
        error_rate: 0.2,
        ..healthy
    };
    assert!(matches!(
        controller
            .tick(&mut state, Some(&broken), at(now + 1))
            .unwrap(),
        RolloutAction::RollBack { .. }
    ));
    state.apply_to(&mut store).unwrap();
    assert!(
        subjects
            .iter()
            .all(|s| !store.is_enabled("new_router_rollout", s, at(now)))
    );
}

/// A progressive window ending in year 33658 (unix seconds 1e12) used to be accepted and
/// written back with a five-digit year that the same crate could not read, so the first
/// `genesis deploy` that rewrote the file made it unreadable. It is refused on input now,
/// naming the field and the value.
#[test]
fn far_future_rollout_window_is_refused_naming_field_and_value() {
    let err = FlagStore::from_json(
        r#"{"flags":[{"name":"f","enabled":true,"strategy":{"type":"progressive",
        "start":1800000000,"end":1000000000000,"from_percent":0,"to_percent":100}}]}"#,
    )
    .unwrap_err();
    assert!(matches!(err, FlagError::Parse { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("end: "), "{text}");
    assert!(text.contains("1000000000000 (unix seconds)"), "{text}");
    assert!(text.contains("9999-12-31T23:59:59.999Z"), "{text}");
    // The last instant that four digits can write is accepted, and survives a rewrite.
    let store = FlagStore::from_json(
        r#"{"flags":[{"name":"f","enabled":true,"strategy":{"type":"progressive",
        "start":"2026-12-01T00:00:00Z","end":253402300799,"from_percent":0,"to_percent":100}}]}"#,
    )
    .unwrap();
    let written = store.to_json_pretty().unwrap();
    assert!(written.contains("9999-12-31T23:59:59Z"), "{written}");
    assert_eq!(FlagStore::from_json(&written).unwrap(), store);
}

/// Rolling a canary flag back used to set its percentage to 0 and keep the subject list,
/// so "rolled back to 0 %" still served alice. A rollback now means nobody gets it.
#[test]
fn rolling_back_a_canary_switches_its_subjects_off() {
    let mut store = FlagStore::from_json(
        r#"{"flags":[{"name":"f","enabled":true,"strategy":{"type":"canary","subjects":["alice"]}}]}"#,
    )
    .unwrap();
    let c = RolloutController::try_new(RolloutConfig::default()).unwrap();
    let t0 = at(1_800_000_000);
    let mut state = c.start("f", t0).unwrap();
    state.apply_to(&mut store).unwrap();
    assert!(store.is_enabled("f", "alice", t0));
    let bad = HealthSample {
        error_rate: 0.5,
        p95_latency: Duration::from_millis(10),
        requests: 10_000,
        tasks: None,
    };
    assert!(matches!(
        c.tick(&mut state, Some(&bad), t0 + Duration::from_secs(60))
            .unwrap(),
        RolloutAction::RollBack { .. }
    ));
    state.apply_to(&mut store).unwrap();
    assert_eq!(state.percent, Percent::ZERO);
    let e = store.evaluate("f", "alice", t0);
    assert!(!e.enabled, "canary subject still on after rollback");
    assert_eq!(e.reason, Reason::Disabled);
    // The file keeps the canary list for the next rollout, which brings alice back.
    let reread = FlagStore::from_json(&store.to_json_pretty().unwrap()).unwrap();
    assert!(!reread.is_enabled("f", "alice", t0));
    assert!(matches!(
        &reread.get("f").unwrap().strategy,
        Strategy::Canary { subjects, .. } if subjects == &["alice"]
    ));
    let mut again = c.start("f", t0).unwrap();
    again.apply_to(&mut store).unwrap();
    assert!(store.is_enabled("f", "alice", t0));
    // A manual rollback does the same.
    c.manual_rollback(&mut again, "pager", t0).unwrap();
    again.apply_to(&mut store).unwrap();
    assert!(!store.is_enabled("f", "alice", t0));
}

fn no_dwell() -> RolloutController {
    RolloutController::try_new(RolloutConfig {
        dwell: Duration::ZERO,
        ..RolloutConfig::default()
    })
    .unwrap()
}

const HEALTHY: HealthSample = HealthSample {
    error_rate: 0.0,
    p95_latency: Duration::from_millis(10),
    requests: 10_000,
    tasks: None,
};

/// A state whose `step` does not fit the configured steps (written under another
/// `[flags.rollout] steps`) used to jump straight to 100 % "complete". It is refused,
/// naming the rule and the values, and left as it was.
#[test]
fn a_stale_rollout_step_is_refused_not_completed() {
    let c = no_dwell();
    let t0 = at(1_800_000_000);
    let mut state = c.start("f", t0).unwrap();
    state.step = 7; // e.g. written under an 8-step config; percent is still 1 %
    let before = state.clone();
    let err = c.tick(&mut state, Some(&HEALTHY), t0).unwrap_err();
    assert!(
        matches!(err, FlagError::InvalidRolloutState { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("step must index the configured steps"),
        "{text}"
    );
    assert!(text.contains("step 7 of 6 steps"), "{text}");
    assert!(text.contains("\"f\""), "{text}");
    assert_eq!(state, before);

    // A step that exists but whose percentage changed is refused as well.
    let mut moved = c.start("f", t0).unwrap();
    moved.step = 2;
    let err = c.tick(&mut moved, Some(&HEALTHY), t0).unwrap_err();
    assert!(
        err.to_string()
            .contains("percent 1% at step 2 where the step is 10%"),
        "{err}"
    );
    // Finished phases must sit at their percentage: a "complete" state at 5 % would
    // otherwise be written into the flags file on the next tick.
    let mut done = c.start("f", t0).unwrap();
    done.phase = genesis_feature_flags::RolloutPhase::Complete;
    done.percent = Percent::try_new(5.0).unwrap();
    let err = c.tick(&mut done, None, t0).unwrap_err();
    assert!(
        err.to_string().contains("complete rollout must be at 100%"),
        "{err}"
    );
    let mut back = c.start("f", t0).unwrap();
    back.phase = genesis_feature_flags::RolloutPhase::RolledBack;
    let err = c.tick(&mut back, None, t0).unwrap_err();
    assert!(
        err.to_string()
            .contains("rolled-back rollout must be at 0%"),
        "{err}"
    );
    // A manual rollback still works on a stale state and leaves a valid one.
    c.manual_rollback(&mut state, "stale", t0).unwrap();
    c.check_state(&state).unwrap();
}

/// `step: usize::MAX` in a state file used to overflow `state.step + 1` (a panic in debug
/// builds, a wrap to step 0 in release). Loading refuses it; ticking refuses it too.
#[test]
fn a_rollout_step_of_usize_max_is_an_error_not_a_panic() {
    let c = no_dwell();
    let t0 = at(1_800_000_000);
    let json = c
        .start("f", t0)
        .unwrap()
        .to_json_pretty()
        .unwrap()
        .replace("\"step\": 0", &format!("\"step\": {}", usize::MAX));
    let err = c.load_state(&json).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("step {} of 6 steps", usize::MAX)),
        "{err}"
    );
    let mut state = genesis_feature_flags::RolloutState::from_json(&json).unwrap();
    assert!(matches!(
        c.tick(&mut state, Some(&HEALTHY), t0),
        Err(FlagError::InvalidRolloutState { .. })
    ));
    assert_eq!(state.step, usize::MAX);
    // A consistent state loads.
    let ok = c.start("f", t0).unwrap().to_json_pretty().unwrap();
    assert_eq!(c.load_state(&ok).unwrap().step, 0);
}

/// Valid flag names (the explicit `Strategy` import above shadows proptest's trait).
fn flag_name() -> impl proptest::strategy::Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,30}"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn buckets_are_uniform_per_decile(name in flag_name(), prefix in "[a-zA-Z0-9:-]{0,12}") {
        let mut deciles = [0u32; 10];
        for i in 0..10_000 {
            let b = bucket(&name, &format!("{prefix}{i}"));
            prop_assert!(u32::from(b) < BUCKETS);
            deciles[usize::from(b / 1_000)] += 1;
        }
        for (d, count) in deciles.iter().enumerate() {
            prop_assert!((700..=1_300).contains(count), "decile {} has {}", d, count);
        }
    }
}

proptest! {
    #[test]
    fn buckets_are_stable_and_evaluation_is_sticky(
        name in flag_name(),
        subject in ".{0,40}",
        percent in 0.0f64..=100.0,
        t in 0i64..4_000_000_000,
    ) {
        let json = format!(
            r#"{{"flags":[{{"name":"{name}","enabled":true,"strategy":{{"type":"percentage","percent":{percent}}}}}]}}"#
        );
        // Two independently parsed stores, evaluated at different times, agree.
        let a = FlagStore::from_json(&json).unwrap();
        let b = FlagStore::from_json(&json).unwrap();
        let ea = a.evaluate(&name, &subject, at(t));
        let eb = b.evaluate(&name, &subject, at(t / 2));
        prop_assert_eq!(ea, eb);
        prop_assert_eq!(ea.bucket, Some(bucket(&name, &subject)));
        let threshold = Percent::try_new(percent).unwrap().threshold();
        prop_assert_eq!(ea.enabled, u32::from(bucket(&name, &subject)) < threshold);
        prop_assert_eq!(ea.reason, if ea.enabled { Reason::InRollout } else { Reason::OutOfRollout });
    }

    #[test]
    fn progressive_rollout_is_monotone(
        subject in "[a-z0-9-]{1,20}",
        start in 1_000_000_000i64..2_000_000_000,
        len in 1i64..10_000_000,
        from in 0.0f64..=100.0,
        extra in 0.0f64..=100.0,
        steps in proptest::option::of(1u32..20),
        t1 in 0i64..12_000_000,
        dt in 0i64..12_000_000,
    ) {
        let to = (from + extra).min(100.0);
        let flag = Flag::new("ramp", true).with_strategy(Strategy::Progressive {
            start: Timestamp::from_unix_seconds(start),
            end: Timestamp::from_unix_seconds(start + len),
            from_percent: Percent::try_new(from).unwrap(),
            to_percent: Percent::try_new(to).unwrap(),
            steps,
        });
        flag.validate().unwrap();
        let store = FlagStore::from_flags([flag]).unwrap();
        let first = start - 1_000_000 + t1;
        let later = first + dt;
        let e1 = store.evaluate("ramp", &subject, at(first));
        let e2 = store.evaluate("ramp", &subject, at(later));
        prop_assert!(e1.percent.unwrap() <= e2.percent.unwrap());
        prop_assert!(!e1.enabled || e2.enabled, "in at {} but out at {}", first, later);
        // Deterministic: the same instant gives the same answer.
        prop_assert_eq!(e1, store.evaluate("ramp", &subject, at(first)));
    }

    /// Whatever progressive window a flags file gives in unix seconds, it is refused
    /// or it survives the rewrite `genesis deploy` does (write, read back, equal).
    #[test]
    fn accepted_flag_files_survive_a_rewrite(
        start in prop_oneof![any::<i64>(), -70_000_000_000i64..260_000_000_000],
        len in prop_oneof![1i64..1_000_000, any::<i64>()],
    ) {
        let end = start.saturating_add(len);
        let json = format!(
            r#"{{"flags":[{{"name":"f","enabled":true,"strategy":{{"type":"progressive","start":{start},"end":{end},"from_percent":0,"to_percent":100}}}}]}}"#
        );
        let in_range = |s: i64| (-62_167_219_200..=253_402_300_799).contains(&s);
        match FlagStore::from_json(&json) {
            Ok(store) => {
                prop_assert!(in_range(start) && in_range(end));
                let written = store.to_json_pretty().unwrap();
                prop_assert_eq!(FlagStore::from_json(&written).unwrap(), store);
            }
            Err(e) => {
                let text = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
                prop_assert!(!in_range(start) || !in_range(end) || end <= start, "{}", text);
            }
        }
    }

    #[test]
    fn raising_a_percentage_only_adds_subjects(
        subject in ".{0,30}",
        p1 in 0.0f64..=100.0,
        p2 in 0.0f64..=100.0,
    ) {
        let (lo, hi) = if p1 <= p2 { (p1, p2) } else { (p2, p1) };
        let mut flag = Flag::new("grow", true);
        flag.set_rollout_percent(Percent::try_new(lo).unwrap());
        let before = flag.evaluate(&subject, Timestamp::UNIX_EPOCH).enabled;
        flag.set_rollout_percent(Percent::try_new(hi).unwrap());
        let after = flag.evaluate(&subject, Timestamp::UNIX_EPOCH).enabled;
        prop_assert!(!before || after);
    }
}

#[test]
fn readers_see_a_whole_store_while_reloads_happen() {
    let file = TempFile::new("concurrent");
    let version = |n: usize| {
        // Every version defines the same flag; its description grows so sizes differ.
        format!(
            r#"{{"flags":[{{"name":"halo_routing","enabled":{},"description":"{}"}}]}}"#,
            n.is_multiple_of(2),
            "v".repeat(n)
        )
    };
    file.write(&version(0));
    let shared = SharedFlags::load(&file.0).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let e = shared.evaluate("halo_routing", "u", SystemTime::now());
                    assert_ne!(e.reason, Reason::UnknownFlag);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut reloaded = 0;
    for n in 1..=50 {
        file.write(&version(n));
        if let ReloadOutcome::Reloaded { .. } = shared.reload_if_changed().unwrap() {
            reloaded += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(reloaded, 50);
    // The last version (n = 50) switched the flag on.
    assert!(shared.is_enabled("halo_routing", "u", SystemTime::now()));
}

/// A definition JSON error used to say only "parsing flag definitions from <string>":
/// the field, the value and the position were in `source()` alone.
#[test]
fn parse_errors_name_the_field_and_value_once() {
    let cases = [
        (
            r#"{"flags":[{"name":"f","enabled":true,"strategy":{"type":"percentage","percent":101}}]}"#,
            "101",
        ),
        (r#"{"flags":[{"name":"f","enabled":"yes"}]}"#, "\"yes\""),
    ];
    for (json, value) in cases {
        let err = FlagStore::from_json(json).unwrap_err();
        assert!(matches!(err, FlagError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("parsing flag definitions from <string>: "),
            "{message}"
        );
        assert!(message.contains(value), "{message:?} lacks {value:?}");
        assert!(message.contains("at line 1 column"), "{message}");
        assert_eq!(
            genesis_core::error_chain(&err).matches(value).count(),
            1,
            "a chain printer shows the detail once"
        );
    }
}

/// `GenesisRolloutRolledBack` must not fire when a kill switch is released (its
/// `genesis_rollout_percent` goes 100 → 0): the alert leaves out exactly the flags the
/// controller refuses.
#[test]
fn the_rollback_alert_leaves_out_exactly_the_kill_switches() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/prometheus/alerts.yml"
    );
    let alerts = std::fs::read_to_string(path).unwrap();
    let rule = alerts
        .split("- alert: ")
        .find(|r| r.starts_with("GenesisRolloutRolledBack"))
        .unwrap();
    let want = format!(
        "genesis_rollout_percent{{flag!~\"{}\"}}",
        genesis_feature_flags::KILL_SWITCHES.join("|")
    );
    assert_eq!(rule.matches(&want).count(), 2, "{rule}");
    assert_eq!(rule.matches("genesis_rollout_percent").count(), 2, "{rule}");
}
