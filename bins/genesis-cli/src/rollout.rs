//! `genesis flags`, `genesis deploy`, `genesis rollback` and `genesis status`: feature
//! flags and progressive rollouts.
//!
//! The rollout policy is the feature-flags crate's pure `RolloutController`; this module
//! is its loop body: read the persisted state (`<state-dir>/<flag>.json`), gather a
//! health sample (given on the command line or scraped from the server's `/metrics`:
//! the flag's `on` cohort when the server counts one, else the whole server's),
//! tick, write the flag's new percentage into the flags file (atomically, so a running
//! server hot-reloads a whole file) and persist the state. A missing or unreadable
//! health source is a missing sample — held, then rolled back — never a healthy one.
//!
//! Commands may run at the same time (cron's tick, an operator's rollback, the deploy
//! loop of another flag): every read-modify-write of the flags file and of a rollout's
//! state holds two exclusive locks, `<state dir>/.lock` then `<flags file>.lock` (always
//! in that order), and never across a scrape. A tick reads the metrics unlocked, then
//! under the locks re-reads the state and writes nothing when it changed meanwhile (a
//! rollback, another tick, a restart): the later change wins, and the tick exits
//! [`EXIT_STOOD_ASIDE`].

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::{Subcommand, ValueEnum};
use genesis::GenesisConfig;
use genesis::flags::{
    Flag, FlagStore, HealthSample, HoldReason, Percent, RolloutAction, RolloutController,
    RolloutEvent, RolloutPhase, RolloutState, Strategy, TaskSample, Timestamp,
};

use crate::health::MAX_METRICS_BODY;
use crate::scrape::{self, Scope, ScrapeError, Snapshot};
use crate::setup::{Failure, load_config};

/// Exit code of a `deploy tick` that wrote nothing because the rollout changed while it
/// read the metrics (rule `rollout_changed`).
pub(crate) const EXIT_STOOD_ASIDE: u8 = 3;

/// How long a command waits for a rollout lock before it gives up (rule `rollout_lock`).
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Output format of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Lines for people.
    Text,
    /// JSON.
    Json,
}

/// `genesis flags ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum FlagsCommand {
    /// Every flag with its state after environment overrides.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// One flag's definition (after environment overrides) as JSON.
    Get {
        /// Flag name.
        name: String,
    },
    /// Evaluates a flag for a subject (user, tenant or request key).
    Eval {
        /// Flag name.
        name: String,
        /// The subject whose sticky bucket decides percentage rollouts.
        #[arg(long)]
        subject: String,
    },
}

/// Where rollout state lives.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateDir {
    /// Directory of rollout state files (default: `<server.data_dir>/rollouts`).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
}

/// `genesis deploy ...`.
#[derive(Debug, clap::Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    dir: StateDir,
    #[command(subcommand)]
    command: DeployCommand,
}

/// Deploy subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum DeployCommand {
    /// Starts a progressive rollout of FLAG at the first step (`flags.rollout.steps`).
    Start {
        /// Flag name.
        flag: String,
        /// Start over even when a rollout of FLAG is in progress.
        #[arg(long)]
        restart: bool,
        /// Take the baseline of the metrics the ticks will read (the same URL as
        /// `deploy tick --metrics-url`), so the first tick judges only traffic since the
        /// start; without it (or when it cannot be read) the first tick takes it and holds.
        #[arg(long)]
        metrics_url: Option<String>,
        /// API key sent with the metrics request.
        #[arg(long, env = "GENESIS_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Roll FLAG out even when it already serves subjects (on above 0 %) or has a
        /// strategy a rollout would overwrite (progressive, a canary above 0 %): it drops
        /// to the first step now, and a rollback switches it off for everyone. Its
        /// definition before the start is recorded; `rollback` and `status` show it.
        #[arg(long)]
        force: bool,
    },
    /// Judges one health sample: advance after a healthy dwell, hold, or roll back.
    Tick(TickArgs),
    /// Pauses FLAG's rollout at its step: ticks keep judging health and still roll back
    /// on a breach, but do not advance until `deploy resume`.
    Pause {
        /// Flag name.
        flag: String,
        /// Why, recorded in the rollout history.
        #[arg(long, default_value = "operator request")]
        note: String,
    },
    /// Resumes a paused rollout; the step's dwell starts over.
    Resume {
        /// Flag name.
        flag: String,
        /// Why, recorded in the rollout history.
        #[arg(long, default_value = "operator request")]
        note: String,
    },
}

/// Arguments of `genesis deploy tick`.
#[derive(Debug, clap::Args)]
pub(crate) struct TickArgs {
    /// Flag name.
    flag: String,
    /// Share of failed requests in the window, in [0, 1].
    #[arg(long, requires_all = ["p95_ms", "requests"], conflicts_with = "metrics_url")]
    error_rate: Option<f64>,
    /// 95th percentile latency in the window, in milliseconds.
    #[arg(long, requires_all = ["error_rate", "requests"])]
    p95_ms: Option<u64>,
    /// Requests in the window.
    #[arg(long, requires_all = ["error_rate", "p95_ms"])]
    requests: Option<u64>,
    /// Tasks that finished (succeeded or failed) in the window.
    #[arg(long, requires_all = ["error_rate", "task_failure_rate"])]
    tasks: Option<u64>,
    /// Share of the finished tasks that failed, in [0, 1].
    #[arg(long, requires_all = ["error_rate", "tasks"])]
    task_failure_rate: Option<f64>,
    /// 95th percentile wall time of the tasks that succeeded, in milliseconds.
    #[arg(long, requires_all = ["error_rate", "tasks"])]
    task_p95_ms: Option<u64>,
    /// Read the sample from a server's Prometheus exposition, e.g.
    /// http://127.0.0.1:8000/metrics (traffic since the previous tick): the flag's `on`
    /// cohort when the server counts it, else the whole server's.
    #[arg(long)]
    metrics_url: Option<String>,
    /// API key sent with the metrics request.
    #[arg(long, env = "GENESIS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
}

/// Arguments of `genesis rollback`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    #[command(flatten)]
    dir: StateDir,
    /// Flag name.
    flag: String,
    /// Why, recorded in the rollout history.
    #[arg(long, default_value = "operator request")]
    note: String,
}

/// Arguments of `genesis status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    dir: StateDir,
    /// One flag's rollout in detail; all rollouts when absent.
    flag: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars().collect()
}

/// `genesis flags`.
pub(crate) fn flags(config: &[&Path], command: FlagsCommand) -> Result<(), Failure> {
    let config = load_config(config)?;
    let shared = genesis::load_flags(&config, &env_pairs())?;
    let store = shared.snapshot();
    let overrides = shared.overrides();
    let override_of = |name: &str| {
        overrides
            .iter()
            .find(|o| o.flag == name)
            .map(ToString::to_string)
    };
    // Without the file the built-in flags were used: the message says so rather than
    // naming a file that does not exist.
    let source = if config.flags.file.exists() {
        config.flags.file.display().to_string()
    } else {
        format!(
            "the built-in flags ({} not found)",
            config.flags.file.display()
        )
    };
    let unknown = |name: &str| {
        Failure::rejected(format!(
            "unknown flag {name:?} in {source} (see genesis flags list)"
        ))
    };
    let now = SystemTime::now();
    let text = match command {
        FlagsCommand::List { format } => match format {
            Format::Json => {
                let list: Vec<serde_json::Value> = store
                    .flags()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name, "enabled": f.enabled, "strategy": f.strategy,
                            "description": f.description, "override": override_of(&f.name),
                        })
                    })
                    .collect();
                to_json(&list)?
            }
            Format::Text => store
                .flags()
                .map(|f| {
                    let mut line = format!(
                        "{:<26} {:<3} {:<20}",
                        f.name,
                        on_off(f.enabled),
                        strategy_text(f, now)
                    );
                    if let Some(o) = override_of(&f.name) {
                        line.push_str(&format!(" [override {o}]"));
                    }
                    line.push_str("  ");
                    line.push_str(&f.description);
                    line.trim_end().to_owned()
                })
                .collect::<Vec<_>>()
                .join("\n"),
        },
        FlagsCommand::Get { name } => {
            let flag = store.get(&name).ok_or_else(|| unknown(&name))?;
            let mut v = serde_json::to_value(flag).map_err(|e| Failure::internal(e.to_string()))?;
            if let (Some(obj), Some(o)) = (v.as_object_mut(), override_of(&name)) {
                obj.insert("override".into(), o.into());
            }
            to_json(&v)?
        }
        FlagsCommand::Eval { name, subject } => {
            let ev = store
                .try_evaluate(&name, &subject, now)
                .map_err(|_| unknown(&name))?;
            to_json(&serde_json::json!({
                "flag": name, "subject": subject, "enabled": ev.enabled, "reason": ev.reason,
                "bucket": ev.bucket, "percent": ev.percent,
            }))?
        }
    };
    crate::commands::emit(&text)
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn strategy_text(flag: &Flag, now: SystemTime) -> String {
    match &flag.strategy {
        Strategy::All => "all".into(),
        Strategy::Off => "strategy off".into(),
        Strategy::Percentage { percent } => format!("{percent}"),
        Strategy::Canary { subjects, percent } => format!("canary {} + {percent}", subjects.len()),
        s @ Strategy::Progressive { .. } => match s.percent_at(Timestamp::from(now)) {
            Some(p) => format!("progressive, now {p}"),
            None => "progressive".into(),
        },
        _ => "other".into(),
    }
}

fn to_json(v: &impl serde::Serialize) -> Result<String, Failure> {
    serde_json::to_string_pretty(v).map_err(|e| Failure::internal(format!("cannot serialise: {e}")))
}

/// What the rollout commands share: configuration, controller, paths.
struct Rollouts {
    controller: RolloutController,
    flags_file: PathBuf,
    dir: PathBuf,
}

impl Rollouts {
    fn new(config: &GenesisConfig, dir: &StateDir) -> Result<Self, Failure> {
        // Bad settings are the operator's input: exit 2 with the rule named.
        let controller = RolloutController::try_new(config.flags.rollout.clone())
            .map_err(|e| Failure::rejected(format!("invalid configuration: {e}")))?;
        Ok(Rollouts {
            controller,
            flags_file: config.flags.file.clone(),
            dir: dir
                .state_dir
                .clone()
                .unwrap_or_else(|| config.server.data_dir.join("rollouts")),
        })
    }

    fn state_path(&self, flag: &str) -> Result<PathBuf, Failure> {
        check_name(flag)?;
        Ok(self.dir.join(format!("{flag}.json")))
    }

    fn scrape_path(&self, flag: &str) -> PathBuf {
        self.dir.join(format!("{flag}.scrape.json"))
    }

    /// The flag's definition from before a forced `deploy start` (see [`Rollouts::start_plan`]).
    fn before_path(&self, flag: &str) -> PathBuf {
        self.dir.join(format!("{flag}.before.json"))
    }

    /// Takes the state dir's lock, then the flags file's: held until the guard drops.
    /// Every read-modify-write of a state file or the flags file happens under it.
    fn lock(&self) -> Result<Locks, Failure> {
        let state = lock_file(&self.dir.join(".lock"))?;
        let mut flags = self.flags_file.as_os_str().to_owned();
        flags.push(".lock");
        let flags = lock_file(Path::new(&flags))?;
        Ok(Locks {
            _state: state,
            _flags: flags,
        })
    }

    /// The state file's text, `None` when there is none.
    fn state_text(&self, flag: &str) -> Result<Option<String>, Failure> {
        let path = self.state_path(flag)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Failure::internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parses the state file's text. Text that is not a state (garbage, a truncated
    /// write) is exit code 2 naming the file and rule `rollout_state`, with the ways
    /// out: a rollback or a forced restart sets the file aside ([`Rollouts::set_aside`]).
    fn parse_state(&self, flag: &str, text: &str) -> Result<RolloutState, Failure> {
        RolloutState::from_json(text).map_err(|e| {
            let path = self
                .state_path(flag)
                .map_or_else(|_| flag.to_owned(), |p| p.display().to_string());
            Failure::rejected(format!(
                "{path}: {}: recover with genesis rollback {flag} (to 0% now) or genesis deploy \
                 start {flag} --restart --force (start over); either sets the unreadable file \
                 aside as {path}.corrupt-<unix time>",
                crate::setup::one_line(&e)
            ))
        })
    }

    /// Under the locks: moves a state file that does not parse out of the way, to
    /// `<file>.corrupt-<unix time>` (kept for a post-mortem), so a rollback or a restart
    /// can record a fresh state. `Some(note for the output)` when it did.
    fn set_aside(&self, flag: &str, now: SystemTime) -> Result<Option<String>, Failure> {
        let Some(text) = self.state_text(flag)? else {
            return Ok(None);
        };
        let Err(e) = RolloutState::from_json(&text) else {
            return Ok(None);
        };
        let path = self.state_path(flag)?;
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut aside = PathBuf::from(format!("{}.corrupt-{secs}", path.display()));
        let mut n = 1;
        while aside.exists() {
            aside = PathBuf::from(format!("{}.corrupt-{secs}-{n}", path.display()));
            n += 1;
        }
        std::fs::rename(&path, &aside).map_err(|io| {
            Failure::internal(format!(
                "cannot set the unreadable rollout state {} aside as {}: {io}",
                path.display(),
                aside.display()
            ))
        })?;
        Ok(Some(format!(
            "unreadable rollout state set aside: {} moved to {} ({})",
            path.display(),
            aside.display(),
            crate::setup::one_line(&e)
        )))
    }

    fn load_state(&self, flag: &str) -> Result<Option<RolloutState>, Failure> {
        match self.state_text(flag)? {
            Some(text) => self.parse_state(flag, &text).map(Some),
            None => Ok(None),
        }
    }

    /// The recorded pre-start definition, if a forced start recorded one (an unreadable
    /// record is reported as such rather than hidden).
    fn load_before(&self, flag: &str) -> Option<Result<Flag, String>> {
        let path = self.before_path(flag);
        let text = std::fs::read_to_string(&path).ok()?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| format!("{} is unreadable: {e}", path.display())),
        )
    }

    /// Checks that FLAG may be (re)started and says what the start must record; run
    /// before the baseline scrape (to refuse early) and again under the locks.
    fn start_plan(
        &self,
        flag: &str,
        restart: bool,
        force: bool,
        now: SystemTime,
    ) -> Result<StartPlan, Failure> {
        let old = match self.state_text(flag)? {
            None => None,
            Some(text) => match self.parse_state(flag, &text) {
                Ok(state) => Some(state),
                // Unreadable: a restart sets it aside under the locks, and starts as if
                // there were no rollout (so a flag left on needs --force).
                Err(_) if restart => None,
                Err(e) => return Err(e),
            },
        };
        if let Some(old) = &old
            && old.phase == RolloutPhase::InProgress
            && !restart
        {
            return Err(Failure::rejected(format!(
                "a rollout of {flag} is in progress {}: use genesis deploy tick, genesis rollback, or --restart",
                where_now(old, self.steps())
            )));
        }
        let store = self.load_store()?;
        let Some(def) = store.get(flag) else {
            return Err(Failure::rejected(format!(
                "unknown flag {flag:?} in {}",
                self.flags_file.display()
            )));
        };
        // Restarting a rollout in progress: the percentage in the file is its own doing,
        // and the record of what was there before it (if forced) stays.
        let own = old
            .as_ref()
            .is_some_and(|s| s.phase == RolloutPhase::InProgress)
            && matches!(
                def.strategy,
                Strategy::Percentage { .. } | Strategy::Canary { .. }
            );
        if own {
            return Ok(StartPlan::KeepRecord);
        }
        match already_on(def, now) {
            None => Ok(StartPlan::Clean),
            Some(_) if force => Ok(StartPlan::Record(def.clone())),
            Some(why) => Err(Failure::rejected(format!(
                "{flag} is {} in {}: deploy start would set it to {} now and a rollback to 0% \
                 (off for everyone){why}; pass --force to roll it out anyway (its current \
                 definition is recorded and shown by rollback and status) (rule: flag_already_on)",
                describe(def, now),
                self.flags_file.display(),
                self.controller
                    .config()
                    .steps
                    .first()
                    .copied()
                    .unwrap_or(Percent::HUNDRED)
            ))),
        }
    }

    fn save_state(&self, state: &RolloutState) -> Result<(), Failure> {
        let json = state
            .to_json_pretty()
            .map_err(|e| Failure::internal(format!("rollout state: {e}")))?;
        write_atomically(&self.state_path(&state.flag)?, &json)
    }

    /// The flags file as written (no environment overrides: they must not be persisted).
    fn load_store(&self) -> Result<FlagStore, Failure> {
        if !self.flags_file.exists() {
            return Err(Failure::rejected(format!(
                "flags file {} does not exist: rollouts write their steps to it (set flags.file)",
                self.flags_file.display()
            )));
        }
        FlagStore::load(&self.flags_file).map_err(|e| {
            Failure::internal(format!("feature flags: {}", crate::setup::one_line(&e)))
        })
    }

    fn save_store(&self, store: &FlagStore) -> Result<(), Failure> {
        let json = store
            .to_json_pretty()
            .map_err(|e| Failure::internal(format!("feature flags: {e}")))?;
        write_atomically(&self.flags_file, &json)
    }

    /// Writes the state's percentage into the flags file. Only that flag's changed
    /// fields are rewritten: the file's order, formatting and other flags are kept byte
    /// for byte (it is meant to be in version control). A file that cannot be edited in
    /// place is written whole, as before.
    fn apply(&self, state: &RolloutState) -> Result<(), Failure> {
        let mut store = self.load_store()?;
        state
            .apply_to(&mut store)
            .map_err(|e| Failure::rejected(format!("{e} in {}", self.flags_file.display())))?;
        let original = std::fs::read_to_string(&self.flags_file).map_err(|e| {
            Failure::internal(format!("cannot read {}: {e}", self.flags_file.display()))
        })?;
        match store.splice_into_json(&original, &state.flag) {
            Ok(text) => write_atomically(&self.flags_file, &text),
            Err(_) => self.save_store(&store),
        }
    }

    /// Refuses kill switches (rule `kill_switch`): see `RolloutController::check_flag`.
    fn check_flag(&self, flag: &str) -> Result<(), Failure> {
        self.controller
            .check_flag(flag)
            .map_err(|e| Failure::rejected(e.to_string()))
    }

    fn steps(&self) -> usize {
        self.controller.config().steps.len()
    }

    /// Refuses a state that does not fit `flags.rollout` (see `RolloutController::check_state`).
    fn check(&self, state: &RolloutState) -> Result<(), Failure> {
        self.controller
            .check_state(state)
            .map_err(|e| self.stale(&state.flag, &e))
    }

    /// The answer to a state that does not fit `flags.rollout`, with the ways out.
    fn stale(&self, flag: &str, e: &genesis::flags::FlagError) -> Failure {
        let path = self
            .state_path(flag)
            .map_or_else(|_| flag.to_owned(), |p| p.display().to_string());
        Failure::rejected(format!(
            "{path}: {e} under the configured flags.rollout: start over with genesis deploy start {flag} --restart, or genesis rollback {flag}"
        ))
    }
}

/// The exclusive locks of [`Rollouts::lock`], released when dropped (or when the
/// process ends, however it ends).
struct Locks {
    _state: File,
    _flags: File,
}

/// Opens (creating) `path` and takes an exclusive lock on it, waiting at most
/// [`LOCK_WAIT`]. The file is never removed: removing a lock file lets a waiter lock a
/// file nobody else sees.
fn lock_file(path: &Path) -> Result<File, Failure> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::internal(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Failure::internal(format!("cannot open lock {}: {e}", path.display())))?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Failure::internal(format!(
                    "lock {} still held after {}s by another genesis deploy, rollback or tick \
                     (rule: rollout_lock): retry, or look for a hung genesis process",
                    path.display(),
                    LOCK_WAIT.as_secs()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Failure::internal(format!(
                    "cannot lock {}: {e} (rule: rollout_lock)",
                    path.display()
                )));
            }
        }
    }
}

/// What a `deploy start` records about the flag's definition before it.
enum StartPlan {
    /// Nothing to record (the flag served nobody): a stale record is removed.
    Clean,
    /// A restart of the rollout in progress: the record of its start stays.
    KeepRecord,
    /// Forced over this definition: recorded.
    Record(Flag),
}

/// Why `deploy start` needs `--force` for `def` (text appended to the refusal; empty
/// when the flag simply serves subjects), `None` when a rollout takes nothing away: the
/// flag serves nobody (off, or 0 %) and its strategy is one the rollout rewrites without
/// loss (`all`, `off`, `percentage`, or a canary, whose subject list is kept).
fn already_on(def: &Flag, now: SystemTime) -> Option<String> {
    let serving = def.enabled
        && match &def.strategy {
            Strategy::All => true,
            Strategy::Off => false,
            Strategy::Percentage { percent } | Strategy::Canary { percent, .. } => {
                *percent > Percent::ZERO
            }
            s => s
                .percent_at(Timestamp::from(now))
                .is_none_or(|p| p > Percent::ZERO),
        };
    let kept = matches!(
        def.strategy,
        Strategy::All | Strategy::Off | Strategy::Percentage { .. } | Strategy::Canary { .. }
    );
    match (serving, kept) {
        (_, false) => Some(format!(
            ", and its {} strategy would be overwritten for good",
            strategy_kind(&def.strategy)
        )),
        (true, true) => Some(String::new()),
        (false, true) => None,
    }
}

fn strategy_kind(s: &Strategy) -> &'static str {
    match s {
        Strategy::All => "all",
        Strategy::Off => "off",
        Strategy::Percentage { .. } => "percentage",
        Strategy::Canary { .. } => "canary",
        Strategy::Progressive { .. } => "progressive",
        _ => "other",
    }
}

/// A flag's definition in words: `on, strategy all (100%)`, `off, strategy percentage 25%`.
fn describe(def: &Flag, now: SystemTime) -> String {
    let strategy = match &def.strategy {
        Strategy::All => "all (100%)".to_owned(),
        Strategy::Off => "off (0%)".to_owned(),
        Strategy::Percentage { percent } => format!("percentage {percent}"),
        _ => strategy_text(def, now),
    };
    format!("{}, strategy {strategy}", on_off(def.enabled))
}

/// Flag names are `[a-z][a-z0-9_]*`: that also keeps state paths inside the state dir.
fn check_name(flag: &str) -> Result<(), Failure> {
    let ok = flag.len() <= 64
        && flag.starts_with(|c: char| c.is_ascii_lowercase())
        && flag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Failure::rejected(format!(
            "invalid flag name {flag:?}: must match [a-z][a-z0-9_]* and be at most 64 bytes"
        )))
    }
}

/// Writes through a temporary file and a rename, so readers (the server's hot reload)
/// never see half a file, and a crash (power loss included) leaves the old file or the
/// new one, never an empty one: the temporary file is fsynced before the rename, and
/// the directory after it, so the rename itself is durable.
fn write_atomically(path: &Path, text: &str) -> Result<(), Failure> {
    write_durably(path, text, &mut Fsync)
}

/// Flushes to stable storage; a seam so tests can see when each flush happens.
trait Durability {
    /// Flushes a written file's data and metadata.
    fn sync_file(&mut self, file: &std::fs::File) -> std::io::Result<()>;
    /// Flushes a directory's entries (a rename in it).
    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()>;
}

/// The real thing: `fsync`.
struct Fsync;

impl Durability for Fsync {
    fn sync_file(&mut self, file: &std::fs::File) -> std::io::Result<()> {
        file.sync_all()
    }

    fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        // Only Unix can open a directory to fsync it; elsewhere the rename is the end.
        if cfg!(unix) {
            std::fs::File::open(dir)?.sync_all()
        } else {
            Ok(())
        }
    }
}

fn write_durably(path: &Path, text: &str, sync: &mut impl Durability) -> Result<(), Failure> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::internal(format!("cannot create {}: {e}", dir.display())))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(format!("{}\n", text.trim_end()).as_bytes())?;
        sync.sync_file(&file)
    });
    written
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Failure::internal(format!("cannot write {}: {e}", path.display()))
        })?;
    sync.sync_dir(dir).map_err(|e| {
        Failure::internal(format!(
            "wrote {} but cannot sync {}: {e}",
            path.display(),
            dir.display()
        ))
    })
}

fn where_now(state: &RolloutState, steps: usize) -> String {
    match state.phase {
        RolloutPhase::InProgress => {
            // A state file may hold any step (check_state refuses it): never overflow here.
            let paused = match &state.paused {
                Some(p) => format!(", paused since {}", p.since),
                None => String::new(),
            };
            format!(
                "at {} (step {}/{steps}){paused}",
                state.percent,
                state.step.saturating_add(1)
            )
        }
        RolloutPhase::Complete => "complete at 100%".into(),
        RolloutPhase::RolledBack => "rolled back to 0%".into(),
        _ => format!("at {}", state.percent),
    }
}

/// `genesis deploy`.
pub(crate) async fn deploy(config: &[&Path], args: DeployArgs) -> Result<(), Failure> {
    let config = load_config(config)?;
    let r = Rollouts::new(&config, &args.dir)?;
    let now = SystemTime::now();
    let text = match args.command {
        DeployCommand::Start {
            flag,
            restart,
            metrics_url,
            api_key,
            force,
        } => {
            check_name(&flag)?;
            r.check_flag(&flag)?;
            if let Some(url) = &metrics_url {
                check_metrics_url(url)?;
            }

            // Refused before the scrape; checked again under the locks below.
            r.start_plan(&flag, restart, force, now)?;
            let state = r
                .controller
                .start(flag.as_str(), now)
                .map_err(|e| Failure::rejected(e.to_string()))?;
            // The baseline is taken before the flag changes: everything after it is
            // traffic of the rollout. The scrape is made without the locks.
            let (snapshot, baseline) = match &metrics_url {
                None => (
                    None,
                    "no baseline (no --metrics-url): the first tick takes it and holds".to_owned(),
                ),
                Some(url) => match scrape_metrics(url, api_key.as_deref(), &flag).await {
                    Ok(snapshot) => (Some(snapshot), format!("baseline taken from {url}")),
                    Err(why) => (
                        None,
                        format!("no baseline ({why}): the first tick takes it and holds"),
                    ),
                },
            };
            let _locks = r.lock()?;
            let set_aside = if restart {
                r.set_aside(&flag, now)?
                    .map(|note| format!("\n{note}"))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let plan = r.start_plan(&flag, restart, force, now)?;
            let _ = std::fs::remove_file(r.scrape_path(&flag));
            if let Some(snapshot) = &snapshot {
                save_snapshot(&r, &flag, snapshot)?;
            }
            let forced = match plan {
                StartPlan::Clean => {
                    let _ = std::fs::remove_file(r.before_path(&flag));
                    String::new()
                }
                StartPlan::KeepRecord => String::new(),
                StartPlan::Record(def) => {
                    let json = serde_json::to_string_pretty(&def)
                        .map_err(|e| Failure::internal(format!("cannot serialise: {e}")))?;
                    write_atomically(&r.before_path(&flag), &json)?;
                    format!(
                        "\nforced: {flag} was {} (recorded in {}; a rollback goes to 0%, not back to it)",
                        describe(&def, now),
                        r.before_path(&flag).display()
                    )
                }
            };
            r.apply(&state)?;
            r.save_state(&state)?;
            format!(
                "{flag}: rollout started {}; next step after {}s of healthy traffic\n{baseline}{forced}{set_aside}",
                where_now(&state, r.steps()),
                r.controller.config().dwell.as_secs()
            )
        }
        DeployCommand::Pause { flag, note } => pause_or_resume(&r, &flag, &note, true, now)?,
        DeployCommand::Resume { flag, note } => pause_or_resume(&r, &flag, &note, false, now)?,
        DeployCommand::Tick(t) => {
            let flag = t.flag.clone();
            let (text, rolled_back) = tick(&r, t, now).await?;
            if rolled_back {
                // Cron and CI must notice: the output is printed, then exit 1.
                crate::commands::emit(&text)?;
                return Err(Failure::internal(format!(
                    "rollout of {flag} rolled back: the health check failed (rule: rollout_health)"
                )));
            }
            text
        }
    };
    crate::commands::emit(&text)
}

/// `genesis deploy pause` and `genesis deploy resume`: only the rollout's state changes
/// (the flags file keeps the step's percentage), under the rollout locks, so a tick that
/// read the metrics meanwhile writes nothing (rule `rollout_changed`).
fn pause_or_resume(
    r: &Rollouts,
    flag: &str,
    note: &str,
    pause: bool,
    now: SystemTime,
) -> Result<String, Failure> {
    check_name(flag)?;
    let _locks = r.lock()?;
    let mut state = r.load_state(flag)?.ok_or_else(|| {
        Failure::rejected(format!(
            "no rollout of {flag} in {}: start one with genesis deploy start {flag} (rule: no_rollout)",
            r.dir.display()
        ))
    })?;
    let note = format!("{note} (by {})", operator(|k| std::env::var(k).ok()));
    let done = if pause {
        r.controller.pause(&mut state, note, now)
    } else {
        r.controller.resume(&mut state, note, now)
    };
    let action = done.map_err(|e| match e {
        genesis::flags::FlagError::InvalidRolloutState { .. } => r.stale(flag, &e),
        e => Failure::rejected(e.to_string()),
    })?;
    r.save_state(&state)?;
    let next = if pause {
        format!("ticks hold it (a breach still rolls it back) until genesis deploy resume {flag}")
    } else {
        format!(
            "the step's dwell starts over: next step after {}s of healthy traffic",
            r.controller.config().dwell.as_secs()
        )
    };
    Ok(format!(
        "{flag}: {action}; now {}; {next}",
        where_now(&state, r.steps())
    ))
}

/// Where a tick's sample came from.
enum Gathered {
    /// A sample (or none: missing), a note on its source, whose traffic it is (a
    /// scraped sample: the flag's `on` cohort or the whole server), and the scrape to
    /// keep as the next baseline.
    Sample(
        Option<HealthSample>,
        String,
        Option<Scope>,
        Option<Snapshot>,
    ),
    /// The metrics were read but there was no baseline to measure from: this scrape is
    /// the baseline, nothing is judged.
    Baseline(Snapshot, String),
}

/// A share in [0, 1] given on the command line, or an error naming the rule.
fn share(flag: &str, value: f64) -> Result<f64, Failure> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Failure::rejected(format!(
            "{flag} {value}: must be a share within [0, 1] (0.01 is 1%) (rule: sample_share)"
        )))
    }
}

/// Refuses a `--metrics-url` that is not an absolute http(s) URL with a host (rule
/// `metrics_url`): a typo, not a server that is down.
fn check_metrics_url(url: &str) -> Result<(), Failure> {
    let why = match reqwest::Url::parse(url) {
        Err(e) => e.to_string(),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            format!("scheme {:?} is not http or https", u.scheme())
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "no host".to_owned(),
        Ok(_) => return Ok(()),
    };
    Err(Failure::rejected(format!(
        "--metrics-url {url:?} is not an http(s) URL: {why} (rule: metrics_url)"
    )))
}

/// Reads `url` and sums it into a [`Snapshot`] keeping `flag`'s `on` cohort; the error
/// says why there is none.
async fn scrape_metrics(url: &str, api_key: Option<&str>, flag: &str) -> Result<Snapshot, String> {
    let client = genesis::llm::http_client_builder()
        .map_err(|e| format!("http client: {e}"))?
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let mut req = client.get(url);
    if let Some(k) = api_key {
        req = req.bearer_auth(k);
    }
    let body = match req.send().await {
        Err(e) => {
            return Err(format!(
                "metrics unreachable at {url}: {}",
                crate::setup::one_line(&e)
            ));
        }
        Ok(resp) if !resp.status().is_success() => {
            return Err(format!(
                "metrics at {url} answered HTTP {}",
                resp.status().as_u16()
            ));
        }
        Ok(resp) => crate::health::read_body(resp, MAX_METRICS_BODY)
            .await
            .map_err(|e| format!("metrics at {url}: {}", crate::setup::one_line(&e)))?,
    };
    scrape::snapshot(&body, flag).map_err(|e| match e {
        ScrapeError::NotGenesis => format!("{e} at {url}"),
        e => format!("metrics at {url} unusable: {e}"),
    })
}

fn save_snapshot(r: &Rollouts, flag: &str, snapshot: &Snapshot) -> Result<(), Failure> {
    let json = serde_json::to_string(snapshot).map_err(|e| Failure::internal(e.to_string()))?;
    write_atomically(&r.scrape_path(flag), &json)
}

/// The sample for a tick and a note on where it came from. A scraped sample is the
/// flag's `on` cohort when the exposition has the flag's cohort series and `split` (the
/// rollout's step is strictly between 0 and 100 %), else the whole server's.
async fn gather(r: &Rollouts, t: &TickArgs, split: bool) -> Result<Gathered, Failure> {
    if let (Some(error_rate), Some(p95), Some(requests)) = (t.error_rate, t.p95_ms, t.requests) {
        let error_rate = share("--error-rate", error_rate)?;
        let tasks = match (t.tasks, t.task_failure_rate) {
            (Some(finished), Some(rate)) => Some(TaskSample {
                finished,
                failure_rate: share("--task-failure-rate", rate)?,
                p95_latency: t.task_p95_ms.map(Duration::from_millis),
            }),
            _ => None,
        };
        let sample = HealthSample {
            error_rate,
            p95_latency: Duration::from_millis(p95),
            requests,
            tasks,
        };
        return Ok(Gathered::Sample(
            Some(sample),
            "given on the command line".into(),
            None,
            None,
        ));
    }
    let Some(url) = &t.metrics_url else {
        return Ok(Gathered::Sample(
            None,
            "no health source given (--error-rate/--p95-ms/--requests or --metrics-url)".into(),
            None,
            None,
        ));
    };
    let current = match scrape_metrics(url, t.api_key.as_deref(), &t.flag).await {
        Ok(s) => s,
        Err(why) => return Ok(Gathered::Sample(None, why, None, None)),
    };
    let previous: Option<Snapshot> = std::fs::read_to_string(r.scrape_path(&t.flag))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let Some(previous) = previous else {
        return Ok(Gathered::Baseline(
            current,
            format!("scraped from {url}: no baseline to measure from yet"),
        ));
    };
    // A baseline from before task numbers existed, or from before cohorts were read
    // (an older genesis), is no baseline: measured from it, the window would hold every
    // task (or every request and task of the cohort) since the server started.
    if !previous.measures(&current) {
        let missing = if previous.has_tasks {
            "cohort numbers"
        } else {
            "task numbers"
        };
        return Ok(Gathered::Baseline(
            current,
            format!(
                "scraped from {url}: the baseline has no {missing} (an older format), so a new one is taken"
            ),
        ));
    }
    let window = current.since(Some(&previous));
    let note = format!("scraped from {url}, traffic since the baseline");
    match window.judged(&t.flag, split) {
        (Some(s), scope) => Ok(Gathered::Sample(Some(s), note, Some(scope), Some(current))),
        (None, scope) => Ok(Gathered::Sample(
            None,
            format!("no genesis_request_duration_seconds histogram at {url}"),
            Some(scope),
            Some(current),
        )),
    }
}

/// One tick: the text to print and whether this tick rolled the flag back.
async fn tick(r: &Rollouts, t: TickArgs, now: SystemTime) -> Result<(String, bool), Failure> {
    // A typo in the URL is refused like `deploy start` refuses it (rule `metrics_url`),
    // before anything is read or recorded: as a missing sample it would count toward a
    // rollback.
    if let Some(url) = &t.metrics_url {
        check_metrics_url(url)?;
    }
    let read = r.state_text(&t.flag)?.ok_or_else(|| {
        Failure::rejected(format!(
            "no rollout of {} in {}: start one with genesis deploy start {} (rule: no_rollout)",
            t.flag,
            r.dir.display(),
            t.flag
        ))
    })?;
    let mut state = r.parse_state(&t.flag, &read)?;
    // A state that does not fit `flags.rollout` (other steps, a hand edit) is refused
    // before any metrics are read, so nothing is written.
    r.check(&state)?;
    // At 0 % or 100 % the flag gives every subject the same answer: no cohorts.
    let split = state.percent > Percent::ZERO && state.percent < Percent::HUNDRED;
    let (sample, source, scope, snapshot, action) = match gather(r, &t, split).await? {
        Gathered::Baseline(snapshot, source) => {
            let action = r
                .controller
                .baseline_taken(&mut state)
                .map_err(|e| r.stale(&state.flag, &e))?;
            (None, source, None, Some(snapshot), action)
        }
        Gathered::Sample(sample, source, scope, snapshot) => {
            let action = r
                .controller
                .tick(&mut state, sample.as_ref(), now)
                .map_err(|e| r.stale(&state.flag, &e))?;
            // Too little traffic: keep the baseline, so the next window covers this one.
            let snapshot = snapshot.filter(|_| !action.keeps_window());
            (sample, source, scope, snapshot, action)
        }
    };
    // The metrics were read without the locks (a scrape takes up to 10 s). Whatever
    // changed the state since it was read (a rollback, another tick, a restart) wins:
    // this tick's decision was made on a state that is gone, so nothing is written.
    let _locks = r.lock()?;
    let current = r.state_text(&t.flag)?;
    if current.as_deref() != Some(read.as_str()) {
        let now_at = match &current {
            Some(text) => r
                .parse_state(&t.flag, text)
                .map_or_else(|e| e.message, |s| where_now(&s, r.steps())),
            None => "no rollout recorded".to_owned(),
        };
        return Err(Failure {
            message: format!(
                "{}: this tick's decision ({action}) was not written: the rollout changed while \
                 the metrics were read (a rollback, a restart or another tick) and is now {now_at}; \
                 the later change wins, nothing was written (rule: rollout_changed)",
                t.flag
            ),
            code: EXIT_STOOD_ASIDE,
        });
    }
    if matches!(
        action,
        RolloutAction::Advance { .. } | RolloutAction::RollBack { .. } | RolloutAction::Complete
    ) {
        r.apply(&state)?;
    }
    r.save_state(&state)?;
    if let Some(s) = snapshot {
        save_snapshot(r, &t.flag, &s)?;
    }
    // Whose traffic was judged goes first: the flag's cohort, or the whole server.
    let scope = scope.map(|s| format!("{s}: ")).unwrap_or_default();
    let sample_text = match &sample {
        Some(s) => format!("{scope}{s} ({source})"),
        None if matches!(
            action,
            RolloutAction::Hold {
                reason: HoldReason::BaselineTaken
            }
        ) =>
        {
            format!("none judged: {source}")
        }
        None => format!("missing: {scope}{source}; a missing sample never counts as healthy"),
    };
    let rolled_back = matches!(action, RolloutAction::RollBack { .. });
    Ok((
        format!(
            "{}: {action}; now {}\nsample: {sample_text}",
            t.flag,
            where_now(&state, r.steps())
        ),
        rolled_back,
    ))
}

/// `genesis rollback`: to 0 % now, with a note in the history.
pub(crate) fn rollback(config: &[&Path], args: RollbackArgs) -> Result<(), Failure> {
    let config = load_config(config)?;
    let r = Rollouts::new(&config, &args.dir)?;
    let now = SystemTime::now();
    check_name(&args.flag)?;
    r.check_flag(&args.flag)?;
    let _locks = r.lock()?;
    if r.load_store()?.get(&args.flag).is_none() {
        return Err(Failure::rejected(format!(
            "unknown flag {:?} in {}",
            args.flag,
            r.flags_file.display()
        )));
    }
    let user = operator(|k| std::env::var(k).ok());
    let note = format!("{} (by {user})", args.note);
    // An unreadable state must not block the way out: it is set aside and the rollback
    // recorded as for a flag with no rollout.
    let set_aside = r
        .set_aside(&args.flag, now)?
        .map(|note| format!("\n{note}"))
        .unwrap_or_default();
    let (mut state, from) = match r.load_state(&args.flag)? {
        Some(s) => {
            let from = s.percent;
            (s, from)
        }
        // No recorded rollout: record one that is rolled back from now on.
        None => {
            let mut s = r
                .controller
                .start(args.flag.as_str(), now)
                .map_err(|e| Failure::rejected(e.to_string()))?;
            s.history.clear();
            (s, Percent::ZERO)
        }
    };
    let action = r
        .controller
        .manual_rollback(&mut state, note, now)
        .map_err(|e| Failure::rejected(e.to_string()))?;
    r.apply(&state)?;
    r.save_state(&state)?;
    // A rollback goes to 0 %, even for a flag that was on before a forced start: the
    // point of a rollout is that the new path is off once it is rolled back.
    let before = match r.load_before(&args.flag) {
        None => String::new(),
        Some(Ok(def)) => format!(
            "\nbefore the rollout (deploy start --force): {}; a rollback does not restore it: \
             edit the flags file if it should be back",
            describe(&def, now)
        ),
        Some(Err(why)) => format!("\nbefore the rollout (deploy start --force): {why}"),
    };
    crate::commands::emit(&format!(
        "{}: {action} (was {from}); off for everyone, canary subjects included: flag file {} updated{before}{set_aside}",
        args.flag,
        r.flags_file.display()
    ))
}

/// Who ran the command, for the history: `$USER`, else `$LOGNAME` (cron sets only
/// that), else the uid.
fn operator(var: impl Fn(&str) -> Option<String>) -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|k| var(k).filter(|v| !v.trim().is_empty()))
        .next()
        .unwrap_or_else(|| match uid() {
            Some(uid) => format!("uid {uid}"),
            None => "unknown".to_owned(),
        })
}

/// The process's user id (the owner of `/proc/self`), where there is one.
fn uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// `genesis status`.
pub(crate) fn status(config: &[&Path], args: StatusArgs) -> Result<(), Failure> {
    let config = load_config(config)?;
    let r = Rollouts::new(&config, &args.dir)?;
    let text = match &args.flag {
        Some(flag) => {
            let state = r.load_state(flag)?.ok_or_else(|| {
                Failure::rejected(format!(
                    "no rollout of {flag} recorded in {} (rule: no_rollout)",
                    r.dir.display()
                ))
            })?;
            let store = r.load_store().ok();
            let def = store.as_ref().and_then(|s| s.get(flag)).cloned();
            match args.format {
                Format::Json => {
                    let before = r.load_before(flag).and_then(Result::ok);
                    to_json(
                        &serde_json::json!({"state": state, "flag": def, "before_start": before}),
                    )?
                }
                Format::Text => detail(&r, &state, def.as_ref()),
            }
        }
        None => {
            let states = all_states(&r)?;
            match args.format {
                Format::Json => to_json(&states)?,
                Format::Text if states.is_empty() => {
                    format!("no rollouts recorded in {}", r.dir.display())
                }
                Format::Text => states
                    .iter()
                    .map(|s| {
                        format!(
                            "{:<26} {} (since {})",
                            s.flag,
                            where_now(s, r.steps()),
                            s.step_started_at
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        }
    };
    crate::commands::emit(&text)
}

fn all_states(r: &Rollouts) -> Result<Vec<RolloutState>, Failure> {
    let entries = match std::fs::read_dir(&r.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Failure::internal(format!(
                "cannot list {}: {e}",
                r.dir.display()
            )));
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| {
            n.strip_suffix(".json")
                .filter(|s| !s.contains('.'))
                .map(str::to_owned)
        })
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        if let Some(s) = r.load_state(&n)? {
            out.push(s);
        }
    }
    Ok(out)
}

fn detail(r: &Rollouts, state: &RolloutState, def: Option<&Flag>) -> String {
    let mut out = format!(
        "{}: {}, started {}, this step since {}\n",
        state.flag,
        where_now(state, r.steps()),
        state.started_at,
        state.step_started_at
    );
    match def {
        Some(f) => out.push_str(&format!(
            "flag file: {} {}\n",
            on_off(f.enabled),
            strategy_text(f, SystemTime::now())
        )),
        None => out.push_str(&format!(
            "flag file: {} not found in {}\n",
            state.flag,
            r.flags_file.display()
        )),
    }
    match r.load_before(&state.flag) {
        Some(Ok(before)) => out.push_str(&format!(
            "before the rollout (deploy start --force): {}\n",
            describe(&before, SystemTime::now())
        )),
        Some(Err(why)) => out.push_str(&format!(
            "before the rollout (deploy start --force): {why}\n"
        )),
        None => {}
    }
    if let Err(e) = r.controller.check_state(state) {
        out.push_str(&format!(
            "state: {e}: deploy tick refuses it; start over with genesis deploy start {} --restart, or roll back\n",
            state.flag
        ));
    } else if let Some(p) = &state.paused {
        out.push_str(&format!(
            "next: paused since {} ({}): ticks hold it and still roll it back on a breach; genesis deploy resume {} continues with a new dwell\n",
            p.since, p.note, state.flag
        ));
    } else if state.phase == RolloutPhase::InProgress {
        let cfg = r.controller.config();
        let dwelt =
            Timestamp::from(SystemTime::now()).saturating_duration_since(state.step_started_at);
        let left = cfg.dwell.saturating_sub(dwelt).as_secs();
        match cfg.steps.get(state.step.saturating_add(1)) {
            Some(next) => out.push_str(&format!(
                "next: advance to {next} after {left}s more at this step, on healthy samples of at least {} requests\n",
                cfg.min_requests
            )),
            None => out.push_str(&format!("next: complete after {left}s more of healthy samples\n")),
        }
    }
    if state.consecutive_missing > 0 {
        out.push_str(&format!(
            "missing samples in a row: {} (tolerance {})\n",
            state.consecutive_missing,
            r.controller.config().missing_sample_tolerance
        ));
    }
    out.push_str("history:\n");
    for RolloutEvent { at, action, sample } in &state.history {
        out.push_str(&format!("  {at}  {action}\n"));
        if let Some(s) = sample {
            out.push_str(&format!("      sample: {s}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_escape_the_state_dir_are_rejected() {
        for bad in ["../etc/passwd", "Halo", "", "a/b", "a.b"] {
            assert_eq!(check_name(bad).unwrap_err().code, 2, "{bad}");
        }
        assert!(check_name("halo_routing2").is_ok());
    }

    #[test]
    fn the_operator_is_user_then_logname_then_the_uid() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(operator(env(&[("USER", "ann"), ("LOGNAME", "bob")])), "ann");
        assert_eq!(operator(env(&[("USER", " "), ("LOGNAME", "bob")])), "bob");
        let fallback = operator(env(&[]));
        assert!(
            fallback.starts_with("uid ") || (cfg!(not(unix)) && fallback == "unknown"),
            "{fallback}"
        );
    }

    /// A directory under the system temp dir, unique to this process and call, removed
    /// with what is in it when dropped: when the test ends, passed or failed.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "genesis-cli-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            // Left by a crashed run of a process that had this id: not this test's files.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl std::ops::Deref for TempDir {
        type Target = Path;

        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = TempDir::new("atomic");
        let p = dir.join("nested/flags.json");
        write_atomically(&p, "one").unwrap();
        write_atomically(&p, "two\n\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let leftovers = std::fs::read_dir(p.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    /// Records each flush with what the disk holds at that moment.
    #[derive(Default)]
    struct Recorder {
        target: PathBuf,
        events: Vec<String>,
    }

    impl Durability for Recorder {
        fn sync_file(&mut self, file: &std::fs::File) -> std::io::Result<()> {
            let len = file.metadata()?.len();
            let target = std::fs::read_to_string(&self.target).unwrap_or_default();
            self.events
                .push(format!("sync file of {len} bytes, target {target:?}"));
            file.sync_all()
        }

        fn sync_dir(&mut self, dir: &Path) -> std::io::Result<()> {
            let target = std::fs::read_to_string(&self.target).unwrap_or_default();
            let same = dir == self.target.parent().unwrap_or(Path::new("."));
            self.events
                .push(format!("sync dir (parent: {same}), target {target:?}"));
            Fsync.sync_dir(dir)
        }
    }

    #[test]
    fn atomic_write_syncs_the_whole_temp_file_before_the_rename_and_the_dir_after() {
        let dir = TempDir::new("fsync");
        let p = dir.join("flags.json");
        write_atomically(&p, "old").unwrap();
        let mut rec = Recorder {
            target: p.clone(),
            ..Recorder::default()
        };
        write_durably(&p, "new", &mut rec).unwrap();
        assert_eq!(
            rec.events,
            [
                "sync file of 4 bytes, target \"old\\n\"",
                "sync dir (parent: true), target \"new\\n\"",
            ]
        );
    }
}
