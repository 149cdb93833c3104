//! The orchestrator: the one object an embedding application holds.

use std::sync::Arc;

use genesis_aop::{Assignment, Validator, ValidatorConfig};
use genesis_core::{Task, TaskId, Usd};
use genesis_daao::{Budget, ModelCatalog, ModelSelector};
use genesis_feature_flags::SharedFlags;
use genesis_halo::{AgentRegistry, RouteDecision, RouteLayer, Router, RouterConfig, RoutingRules};
use genesis_htdag::{Decomposer, HeuristicDecomposer, Limits, TaskDag, TaskNode};
use genesis_resilience::{
    DegradationConfig, DegradationLevel, DegradationSignals, SharedDegradation,
};
use genesis_security::{Checkpoint, Guard, SecurityError};
use genesis_telemetry::catalogue;
use tracing::{Instrument as _, debug, info_span, warn};

use crate::providers::{LlmProviders, PlanningScope};

use crate::plan::{PlanRouting, PlannedTask, TaskModel, TaskRoute};
use crate::run::executor_internals::{AgentTry, Learner, Replanner, RunSpec};
use crate::run::{
    AgentSet, DaySpend, Executor, ExecutorConfig, NoJournal, Refinement, RunHandle, RunJournal,
    TaskReport,
};
use crate::{GenesisConfig, GenesisError, Plan, PlanningSpend, defaults};
use genesis_core::RunId;
use genesis_daao::CostLedger;

/// Per-request planning options.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The run budget the plan must fit in; `None` uses the configured per-run budget.
    /// It can only lower that budget: above it, planning fails with
    /// [`GenesisError::BudgetAboveLimit`].
    pub budget: Option<Usd>,
    /// Who is asking (user, tenant or API key id): the subject of sticky flag rollouts.
    pub subject: Option<String>,
    /// Today's spend shared by every run (see [`RunOptions::day`]): with a daily budget
    /// it feeds the degradation policy (LLM planning stops below 10% of the day's budget
    /// left, `minimal` below 2%; see [`DegradationConfig`]).
    pub day: Option<DaySpend>,
    /// Today's spend of the runs of [`PlanOptions::subject`] (see
    /// [`RunOptions::subject_day`]): LLM planning reserves and charges it too, held to
    /// `budget.per_subject_day`.
    pub subject_day: Option<DaySpend>,
    /// Background for the request (what the API's `context` field carries): screened
    /// with the request and given to every agent and to an LLM planner as part of the
    /// request (`"{request}\n\nContext: {context}"`, the plan's `request`), but not
    /// decomposed by the heuristic decomposer, which would make its sentences tasks.
    /// Blank is none.
    pub context: Option<String>,
}

impl PlanOptions {
    /// The request with [`PlanOptions::context`] appended, as agents see it: the
    /// [`Plan::request`] of a plan made with these options (a server compares it with
    /// a retried submission's).
    pub fn full_request<'r>(&self, request: &'r str) -> std::borrow::Cow<'r, str> {
        match self.context.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => format!("{request}\n\nContext: {c}").into(),
            _ => request.into(),
        }
    }
}

/// Builds an [`Orchestrator`]. Every part has a default: the built-in 16 agents,
/// routing rules and model catalogue, the heuristic decomposer, default limits and the
/// shipped injection detector. The built-in rules name the built-in agents, so they
/// apply only with the built-in registry: with your own [`registry`](Self::registry)
/// and no [`rules`](Self::rules), routing has no rules.
#[derive(Default)]
pub struct OrchestratorBuilder {
    registry: Option<AgentRegistry>,
    rules: Option<RoutingRules>,
    router_config: Option<RouterConfig>,
    catalog: Option<ModelCatalog>,
    margin: Option<f64>,
    limits: Option<Limits>,
    guard: Option<Guard>,
    security_limits: Option<genesis_security::Limits>,
    decomposer: Option<Arc<dyn Decomposer>>,
    budget: Option<Budget>,
    validator: Option<ValidatorConfig>,
    agents: Option<AgentSet>,
    executor: Option<ExecutorConfig>,
    flags: Option<SharedFlags>,
    llm: Option<LlmProviders>,
    breaker_hook: Option<genesis_resilience::StateChangeHook>,
    max_agents: Option<usize>,
    learn_from_runs: Option<bool>,
    learn_interval: Option<std::time::Duration>,
    degradation: Option<DegradationConfig>,
    llm_timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for OrchestratorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrchestratorBuilder")
            .finish_non_exhaustive()
    }
}

impl OrchestratorBuilder {
    /// Uses this agent registry. Without [`rules`](Self::rules) it routes with no rules
    /// (the built-in rules name the built-in agents); pass
    /// `RoutingRules::from_toml_str(..)` to keep rules for your agents.
    #[must_use]
    pub fn registry(mut self, registry: AgentRegistry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Uses these routing rules.
    #[must_use]
    pub fn rules(mut self, rules: RoutingRules) -> Self {
        self.rules = Some(rules);
        self
    }

    /// Uses this router tuning.
    #[must_use]
    pub fn router_config(mut self, config: RouterConfig) -> Self {
        self.router_config = Some(config);
        self
    }

    /// Whether finished runs teach the router (default on): every agent call's outcome
    /// updates that agent's success rate and cost and latency means, a task an agent
    /// completed becomes one of its examples (per `RouterConfig::learn_examples`), and
    /// the agents of one run are recorded as used together (plan context). See
    /// [`Router::record_outcomes`]. Outcomes are applied in batches, at most
    /// [`OrchestratorBuilder::learn_interval`] after their run ended
    /// ([`Orchestrator::flush_learning`] applies them at once).
    #[must_use]
    pub fn learn_from_runs(mut self, on: bool) -> Self {
        self.learn_from_runs = Some(on);
        self
    }

    /// Longest a finished run's outcomes wait to be applied to the router (default
    /// 1 s): one batch costs about the same however many runs it holds.
    #[must_use]
    pub fn learn_interval(mut self, interval: std::time::Duration) -> Self {
        self.learn_interval = Some(interval);
        self
    }

    /// Uses this model catalogue.
    #[must_use]
    pub fn models(mut self, catalog: ModelCatalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Sets DAG limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Uses this security guard (detector and per-checkpoint policies).
    #[must_use]
    pub fn guard(mut self, guard: Guard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// Bounds a whole decomposition by the configured decomposer (every call of an LLM
    /// decomposer together, retries included): past it the heuristic plan is used, with
    /// a degradation reason naming `planning.llm_timeout`. Default: the
    /// `planning.llm_timeout` default (20 s); `Duration::ZERO` turns the bound off.
    #[must_use]
    pub fn llm_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.llm_timeout = Some(timeout);
        self
    }

    /// Uses this decomposer (it should fall back to the heuristic one on failure; the
    /// orchestrator also falls back when it returns an error).
    #[must_use]
    pub fn decomposer(mut self, decomposer: Arc<dyn Decomposer>) -> Self {
        self.decomposer = Some(decomposer);
        self
    }

    /// Sets spending limits.
    #[must_use]
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The backends that carry out tasks (needed by [`Orchestrator::run`]).
    #[must_use]
    pub fn agents(mut self, agents: AgentSet) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Executor settings (concurrency, timeouts, retries, breakers, refinement).
    #[must_use]
    pub fn executor_config(mut self, config: ExecutorConfig) -> Self {
        self.executor = Some(config);
        self
    }

    /// Feature flags: kill switches and rollout gates checked on every request.
    #[must_use]
    pub fn flags(mut self, flags: SharedFlags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// LLM providers (their breakers feed the degradation level).
    #[must_use]
    pub fn llm(mut self, providers: LlmProviders) -> Self {
        self.llm = Some(providers);
        self
    }

    /// Called on every agent circuit-breaker state change with `(key, from, to)`.
    #[must_use]
    pub fn on_breaker_change(mut self, hook: genesis_resilience::StateChangeHook) -> Self {
        self.breaker_hook = Some(hook);
        self
    }

    /// The guard the orchestrator will use (for screens built before `build`).
    pub fn current_guard(&self) -> Guard {
        self.guard.clone().unwrap_or_default()
    }

    /// Sets the degradation policy: how many open breakers move planning to
    /// `llm_fallback` or `minimal`, and how long recovery waits (see [`Stages`]).
    #[must_use]
    pub fn degradation(mut self, config: DegradationConfig) -> Self {
        self.degradation = Some(config);
        self
    }

    /// Sets validator thresholds.
    #[must_use]
    pub fn validator(mut self, config: ValidatorConfig) -> Self {
        self.validator = Some(config);
        self
    }

    /// Applies a loaded configuration: limits, budget, router tuning, model margin,
    /// security. Catalogue files named in it are read by [`crate::load_catalogues`].
    ///
    /// # Errors
    /// An invalid security configuration (e.g. an unusable detector threshold).
    pub fn config(mut self, config: &GenesisConfig) -> Result<Self, GenesisError> {
        self.limits = Some(config.limits.clone());
        self.budget = Some(config.budget);
        self.router_config = Some(config.routing.router);
        self.max_agents = config.routing.max_agents;
        self.learn_from_runs = Some(config.routing.learn_from_runs);
        self.learn_interval = Some(config.routing.learn_interval);
        self.llm_timeout = Some(config.planning.llm_timeout);
        self.margin = Some(config.models.margin);
        self.security_limits = Some(config.security.limits.clone());
        self.guard =
            Some(
                Guard::from_config(&config.security).map_err(|e| GenesisError::Config {
                    message: format!("security: {e}"),
                })?,
            );
        Ok(self)
    }

    /// Builds the orchestrator.
    ///
    /// # Errors
    /// Invalid registry, rules (e.g. a rule naming an unknown agent) or catalogue.
    pub fn build(self) -> Result<Orchestrator, GenesisError> {
        let custom_registry = self.registry.is_some();
        let registry = match self.registry {
            Some(r) => r,
            None => AgentRegistry::from_toml_str(defaults::AGENTS_TOML)?,
        };
        let rules = match self.rules {
            Some(r) => r,
            // Audit U6: the built-in rules with a user's own catalogue failed the build
            // ("rule security-sensitive names unknown agent security").
            None if custom_registry => RoutingRules::empty(),
            None => RoutingRules::from_toml_str(defaults::ROUTING_RULES_TOML)?,
        };
        if let Some(max) = self.max_agents
            && registry.len() > max
        {
            return Err(GenesisError::Config {
                message: format!(
                    "the agent catalogue holds {} agents, over routing.max_agents {max}",
                    registry.len()
                ),
            });
        }
        let router = Router::with_config(registry, rules, self.router_config.unwrap_or_default())?;
        let catalog = match self.catalog {
            Some(c) => c,
            None => ModelCatalog::from_toml_str(defaults::MODELS_TOML)?,
        };
        let mut selector = ModelSelector::new(catalog);
        if let Some(m) = self.margin {
            selector = selector.with_margin(m);
        }
        let limits = self.limits.unwrap_or_default();
        let security_limits = self
            .security_limits
            .unwrap_or_else(|| genesis_security::Limits {
                max_request_chars: limits.max_request_chars,
                ..genesis_security::Limits::default()
            });
        let guard = self.guard.unwrap_or_default();
        let agents = self.agents.unwrap_or_default();
        let executor = Executor::new(
            agents.clone(),
            self.executor.unwrap_or_default(),
            guard.clone(),
            self.breaker_hook,
        );
        Ok(Orchestrator {
            inner: Arc::new(Inner {
                flags: self.flags,
                flag_counters: FlagCounters::default(),
                cohort_metrics: Arc::new(crate::cohort::CohortMetrics::default()),
                llm: self.llm,
                agents,
                executor,
                limits,
                security_limits,
                guard,
                decomposer: self.decomposer,
                llm_timeout: self
                    .llm_timeout
                    .unwrap_or_else(|| crate::config::PlanningConfig::default().llm_timeout),
                heuristic: HeuristicDecomposer::new(),
                router,
                selector,
                budget: self.budget.unwrap_or_default(),
                validator: self.validator.unwrap_or_default(),
                learn_from_runs: self.learn_from_runs.unwrap_or(true),
                degradation_config: self.degradation.clone().unwrap_or_default(),
                degradation: SharedDegradation::new(self.degradation.unwrap_or_default())
                    .with_hook(Arc::new(|from, to| {
                        // Lowering is degraded service (warn); going back up is
                        // recovery (info).
                        if to > from {
                            warn!(
                                from = from.as_str(),
                                to = to.as_str(),
                                "degradation level changed"
                            );
                        } else {
                            tracing::info!(
                                from = from.as_str(),
                                to = to.as_str(),
                                "degradation level changed"
                            );
                        }
                    })),
                learning: Learning {
                    pending: std::sync::Mutex::new(Vec::new()),
                    interval: self
                        .learn_interval
                        .unwrap_or(std::time::Duration::from_secs(1)),
                },
                served_agents: std::sync::Mutex::new(None),
            }),
        })
    }
}

struct Inner {
    flags: Option<SharedFlags>,
    flag_counters: FlagCounters,
    /// The rollout cohorts' metric handles (see [`Orchestrator::cohort_metrics`]).
    cohort_metrics: Arc<crate::cohort::CohortMetrics>,
    llm: Option<LlmProviders>,
    /// The executor's backends (a clone: the map's values are shared), to tell which
    /// agents a run can call before it is accepted.
    agents: AgentSet,
    executor: Executor,
    limits: Limits,
    security_limits: genesis_security::Limits,
    guard: Guard,
    decomposer: Option<Arc<dyn Decomposer>>,
    /// `planning.llm_timeout`: the bound on one decomposition by `decomposer` (zero: none).
    llm_timeout: std::time::Duration,
    heuristic: HeuristicDecomposer,
    router: Router,
    selector: ModelSelector,
    budget: Budget,
    validator: ValidatorConfig,
    learn_from_runs: bool,
    /// The degradation policy, fed with breaker states at every plan and run.
    degradation: SharedDegradation,
    /// Its thresholds (to say which signal degraded).
    degradation_config: DegradationConfig,
    learning: Learning,
    /// [`Orchestrator::served_agents`] of the registry it was counted for.
    served_agents: std::sync::Mutex<Option<(Arc<AgentRegistry>, usize)>>,
}

/// Which stages of the pipeline a plan or run uses, from the feature flags evaluated
/// for its subject and the degradation level (breaker states):
///
/// | switch | off when | effect |
/// |---|---|---|
/// | LLM calls | flag `llm_integration_enabled` off, or below 10% of the daily budget left (open provider breakers fail calls fast on their own) | heuristic decomposition; with the flag off, LLM agents also refuse tasks (they are re-routed) |
/// | decomposition | flag `htdag_decomposition` off | one task per request |
/// | matching | flag `halo_routing` off, or level `minimal` (half the agent breakers open, or below 2% of the daily budget left) | routing by task kind only |
/// | plan context | flag `new_router_rollout` off for the subject | each task routed alone |
/// | cost routing | flag `daao_cost_routing` off | the strongest model for every task |
/// | validation gate | flag `aop_validation` off | plans are scored but a failed check does not reject them |
/// | early stopping | flag `tumix_early_stopping` off | refinement runs to `max_rounds`; level `minimal`: no refinement |
///
/// A flag that is not defined counts as on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// The degradation level from breaker states.
    pub level: DegradationLevel,
    /// Why the level is below `full` (`None` at `full`), with the breaker counts.
    pub degraded: Option<String>,
    /// Why LLM calls are off (`None`: allowed).
    pub llm_off: Option<String>,
    /// HTDAG decomposition.
    pub decompose: bool,
    /// Why rules and text matching are off (`None`: on).
    pub matching_off: Option<String>,
    /// HALO's plan-context stage.
    pub plan_context: bool,
    /// DAAO's cheapest-capable model choice.
    pub cost_routing: bool,
    /// Whether a failed validation rejects the plan.
    pub validation_gate: bool,
    /// TUMIX refinement for this run.
    pub refinement: Refinement,
}

/// Plans (and, with the executor, runs) requests. Cheap to clone; share it across tasks.
///
/// ```
/// let genesis = genesis::Orchestrator::builder().build().unwrap();
/// let plan = genesis.plan_sync("Build a SaaS business for invoices").unwrap();
/// assert!(plan.validation.passed);
/// assert!(plan.tasks.len() >= 7);
/// ```
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orchestrator")
            .field("agents", &self.inner.router.registry().len())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// A builder with every default.
    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    /// The router (for outcome feedback, cache statistics and the registry).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The security guard.
    pub fn guard(&self) -> &Guard {
        &self.inner.guard
    }

    /// The model selector.
    pub fn selector(&self) -> &ModelSelector {
        &self.inner.selector
    }

    /// The DAG limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The configured budgets (`budget.per_run`, `budget.per_day`).
    pub fn budget(&self) -> Budget {
        self.inner.budget
    }

    /// The per-run budget a run asking for `requested` gets: `requested` when it is at
    /// or below the configured `budget.per_run` (or there is none), the configured
    /// budget when nothing is asked for. A caller can lower the operator's cap, never
    /// raise it.
    ///
    /// # Errors
    /// [`GenesisError::BudgetAboveLimit`] when `requested` is above `budget.per_run`,
    /// naming both.
    pub fn run_budget(&self, requested: Option<Usd>) -> Result<Option<Usd>, GenesisError> {
        match (requested, self.inner.budget.per_run) {
            (Some(requested), Some(limit)) if requested > limit => {
                Err(GenesisError::BudgetAboveLimit { requested, limit })
            }
            (Some(requested), _) => Ok(Some(requested)),
            (None, limit) => Ok(limit),
        }
    }

    /// Plans a request with the configured decomposer, falling back to the heuristic
    /// decomposer (and recording the degradation) when it fails.
    ///
    /// # Errors
    /// See [`Orchestrator::plan_with`].
    pub async fn plan(&self, request: &str) -> Result<Plan, GenesisError> {
        self.plan_with(request, &PlanOptions::default()).await
    }

    /// [`Orchestrator::plan`] with options.
    ///
    /// # Errors
    /// [`GenesisError::Rejected`] when screening refuses the request (limits,
    /// injection); [`GenesisError::BudgetAboveLimit`] when `options.budget` is above
    /// the configured per-run budget; [`GenesisError::InvalidPlan`] when validation
    /// fails (the plan is inside); decomposition errors.
    pub async fn plan_with(
        &self,
        request: &str,
        options: &PlanOptions,
    ) -> Result<Plan, GenesisError> {
        let started = std::time::Instant::now();
        let subject = options.subject.as_deref().unwrap_or("anonymous");
        self.gate(subject)?;
        // The heuristic decomposer reads the request alone (its context's sentences
        // are not tasks); the rest sees both.
        let asked = request;
        let full = options.full_request(request);
        let request: &str = &full;
        self.screen(request)?;
        // Before decomposing: an LLM decomposer costs money.
        self.run_budget(options.budget)?;
        let stages = self.stages_with(subject, options.day.as_ref());
        let inner = &self.inner;
        let heuristic = || inner.heuristic.decompose_sync(asked, &inner.limits);
        let mut planning = None;
        // A child of the request's span, as are the other stages' (screen, route,
        // validate), so planning time is visible in the trace.
        let decompose_span = info_span!(
            "plan.decompose",
            decomposer = tracing::field::Empty,
            tasks = tracing::field::Empty
        );
        let decomposed = async {
            Ok::<_, GenesisError>(if !stages.decompose {
            (
                single_task_dag(request, &inner.limits)?,
                "single_task".to_owned(),
                DegradationLevel::Full,
                None,
            )
        } else {
            match inner.decomposer.as_ref() {
                Some(d) if stages.llm_off.is_none() => {
                    let (decomposed, spend) = self.decompose_bounded(d, request, options).await?;
                    planning = spend;
                    match decomposed {
                        Ok(dag) => (dag, d.name().to_owned(), DegradationLevel::Full, None),
                        Err(cause) => {
                            warn!(decomposer = d.name(), error = %cause, "decomposer failed; falling back to heuristic");
                            (
                                heuristic()?,
                                "heuristic".to_owned(),
                                DegradationLevel::LlmFallback,
                                Some(format!("{} failed: {cause}", d.name())),
                            )
                        }
                    }
                }
                Some(_) => (
                    heuristic()?,
                    "heuristic".to_owned(),
                    DegradationLevel::LlmFallback,
                    stages.llm_off.clone(),
                ),
                None => (
                    heuristic()?,
                    "heuristic".to_owned(),
                    DegradationLevel::Full,
                    None,
                ),
            }
            })
        }
        .instrument(decompose_span.clone())
        .await;
        let (dag, decomposer, degradation, reason) = decomposed?;
        decompose_span.record("decomposer", decomposer.as_str());
        decompose_span.record("tasks", i64::try_from(dag.len()).unwrap_or(i64::MAX));
        drop(decompose_span);
        let degraded = stages.degradation(degradation, reason);
        let gauge = f64::from(degraded.0.as_gauge());
        let plan = self.finish(
            request,
            asked,
            Dag::Owned(dag),
            decomposer,
            degraded,
            options,
            &stages,
        );
        metrics::histogram!(catalogue::PLAN_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::gauge!(catalogue::DEGRADATION_LEVEL).set(gauge);
        // What planning spent stays with the plan, accepted or refused.
        match plan {
            Ok(mut plan) => {
                plan.planning = planning;
                Ok(plan)
            }
            Err(GenesisError::InvalidPlan { summary, mut plan }) => {
                plan.planning = planning;
                Err(GenesisError::InvalidPlan { summary, plan })
            }
            Err(e) => Err(e),
        }
    }

    /// Decomposes with `d` under `planning.llm_timeout`, its LLM calls budgeted on the
    /// request's run budget and the day's (see [`crate::providers::LlmPlanner`]).
    /// Returns the DAG, or the cause it failed for as one line (the error's source
    /// chain: invalid JSON, a cycle, a budget, a 429, the timeout), and what its calls
    /// spent (`None` when none was made).
    ///
    /// # Errors
    /// [`GenesisError::BudgetAboveLimit`] for a budget above `budget.per_run`.
    async fn decompose_bounded(
        &self,
        d: &Arc<dyn Decomposer>,
        request: &str,
        options: &PlanOptions,
    ) -> Result<(Result<TaskDag, String>, Option<PlanningSpend>), GenesisError> {
        let inner = &self.inner;
        let budget = Budget {
            per_run: self.run_budget(options.budget)?,
            per_day: inner.budget.per_day,
            per_subject_day: inner.budget.per_subject_day,
        };
        let ledger = match &options.day {
            Some(day) => CostLedger::sharing_day(budget, day.shared()),
            None => CostLedger::new(budget, Usd::ZERO),
        };
        let ledger = match &options.subject_day {
            Some(subject_day) => ledger.with_subject_day(subject_day.shared()),
            None => ledger,
        };
        let timeout = inner.llm_timeout;
        let deadline = (!timeout.is_zero())
            .then(|| tokio::time::Instant::now().checked_add(timeout))
            .flatten();
        let scope = PlanningScope::new(ledger, deadline);
        let decomposing = scope.run(d.decompose(request, &inner.limits));
        let decomposed = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, decomposing)
                .await
                .unwrap_or_else(|_| {
                    Err(genesis_htdag::HtdagError::Decomposer {
                        decomposer: d.name().to_owned(),
                        source: format!(
                            "llm decomposition took longer than planning.llm_timeout \
                             {timeout:?} (rule: llm_timeout)"
                        )
                        .into(),
                    })
                }),
            None => decomposing.await,
        };
        let spend = scope.spend();
        // The cause, on one line: a decomposer's own failure without the wrapper that
        // only repeats its name.
        let cause = |e: genesis_htdag::HtdagError| {
            let chain = match &e {
                genesis_htdag::HtdagError::Decomposer { source, .. } => {
                    genesis_core::error_chain(source.as_ref())
                }
                other => genesis_core::error_chain(other),
            };
            chain.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        Ok((
            decomposed.map_err(cause),
            (spend.calls > 0).then_some(spend),
        ))
    }

    /// What the degradation level is judged on now: the LLM providers' breakers, the
    /// agents' breakers and, with a daily budget and `day`, the share of it left. The
    /// agents' counts cover every agent a backend serves: an agent never called yet has
    /// no breaker and counts as closed, so "half the agents' breakers open" is half of
    /// the agents served, as `/api/status` lists them, not half of those called so far.
    fn degradation_signals(
        &self,
        day: Option<&DaySpend>,
        now: tokio::time::Instant,
    ) -> DegradationSignals {
        let inner = &self.inner;
        let day_limit = inner.budget.per_day.filter(|l| l.as_f64() > 0.0);
        let budget_remaining = day
            .zip(day_limit)
            .map(|(d, limit)| (1.0 - d.spent().as_f64() / limit.as_f64()).clamp(0.0, 1.0));
        let mut agents = inner.executor.breakers().counts(now);
        agents.closed += self.served_agents().saturating_sub(agents.total());
        DegradationSignals {
            llm_providers: inner
                .llm
                .as_ref()
                .map(|l| l.breakers().counts(now))
                .unwrap_or_default(),
            agents,
            budget_remaining,
        }
    }

    /// How many agents of the catalogue a backend serves ([`Orchestrator::serves_agent`]);
    /// counted once per catalogue (the router's registry), not per call.
    fn served_agents(&self) -> usize {
        let registry = self.inner.router.registry();
        let mut cached = self
            .inner
            .served_agents
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((of, n)) = cached.as_ref()
            && Arc::ptr_eq(of, &registry)
        {
            return *n;
        }
        let n = registry
            .iter()
            .filter(|a| self.serves_agent(a.id.as_str()))
            .count();
        *cached = Some((registry, n));
        n
    }

    /// Re-judges the degradation level from the breakers and `day`'s spend now, without
    /// a request: a level is otherwise only updated when a plan is made, so an idle
    /// server would keep reporting the level of its last request (the server calls this
    /// when `/metrics` or `/api/status` is read). Sets `genesis_degradation_level` and
    /// returns the level.
    pub fn refresh_degradation(&self, day: Option<&DaySpend>) -> DegradationLevel {
        let now = tokio::time::Instant::now();
        let signals = self.degradation_signals(day, now);
        let level = self.inner.degradation.update(&signals, now);
        metrics::gauge!(catalogue::DEGRADATION_LEVEL).set(f64::from(level.as_gauge()));
        level
    }

    /// The pipeline stages for `subject` now: its feature flags and the degradation
    /// level, which is updated first from the LLM providers' and agents' breakers.
    pub fn stages(&self, subject: &str) -> Stages {
        self.stages_with(subject, None)
    }

    /// [`Orchestrator::stages`] with today's spend, for the budget signal: with a daily
    /// budget, the fraction of it left.
    pub fn stages_with(&self, subject: &str, day: Option<&DaySpend>) -> Stages {
        let inner = &self.inner;
        let now = tokio::time::Instant::now();
        let day_limit = inner.budget.per_day.filter(|l| l.as_f64() > 0.0);
        let signals = self.degradation_signals(day, now);
        let budget_remaining = signals.budget_remaining;
        let cfg = &inner.degradation_config;
        let budget_note = |below: f64| {
            budget_remaining.filter(|b| *b < below).and_then(|b| {
                day_limit.map(|limit| {
                    format!(
                        "degraded to {}: {:.1}% of the daily budget {limit} left (below {:.1}%)",
                        level_name(b, cfg),
                        b * 100.0,
                        below * 100.0
                    )
                })
            })
        };
        let level = inner.degradation.update(&signals, now);
        let open = |c: &genesis_resilience::BreakerCounts, what: &str| {
            format!(
                "degraded to {}: {} of {} {what} circuit breakers open",
                level.as_str(),
                c.open,
                c.open + c.closed + c.half_open
            )
        };
        // The level holds for `recovery_hold` after the breakers close, so the counts
        // may read lower than what degraded it.
        let degraded = match level {
            DegradationLevel::Full => None,
            DegradationLevel::LlmFallback => budget_note(cfg.llm_fallback_budget_fraction)
                .or_else(|| Some(open(&signals.llm_providers, "LLM provider"))),
            DegradationLevel::Minimal => {
                budget_note(cfg.minimal_budget_fraction.max(f64::MIN_POSITIVE))
                    .or_else(|| Some(open(&signals.agents, "agent")))
            }
        };
        // One snapshot of the flags and one clock reading for all seven.
        let flags = self.flag_batch();
        let on = |flag: &'static str| flags.eval(flag, subject).unwrap_or(true);
        // Open provider breakers already fail LLM calls fast (and let a probe through
        // after their cool-down, which is how planning recovers), so the level only
        // reports them; the flag turns calls off.
        // A nearly spent daily budget has no breaker to stop LLM calls: it does.
        let llm_off = if !on("llm_integration_enabled") {
            Some("feature flag llm_integration_enabled is off".to_owned())
        } else {
            budget_note(cfg.llm_fallback_budget_fraction)
        };
        let matching_off = if !on("halo_routing") {
            Some("feature flag halo_routing is off".to_owned())
        } else if !level.allows_learned_routing() {
            degraded.clone()
        } else {
            None
        };
        let refinement = if !level.allows_refinement() {
            Refinement::Off
        } else if on("tumix_early_stopping") {
            Refinement::EarlyStop
        } else {
            Refinement::AllRounds
        };
        Stages {
            level,
            degraded,
            llm_off,
            decompose: on("htdag_decomposition"),
            matching_off,
            plan_context: on("new_router_rollout"),
            cost_routing: on("daao_cost_routing"),
            validation_gate: on("aop_validation"),
            refinement,
        }
    }

    /// Refuses work when a kill switch is on or orchestration is off.
    ///
    /// # Errors
    /// [`GenesisError::Disabled`] naming the flag.
    pub fn gate(&self, subject: &str) -> Result<(), GenesisError> {
        let flags = self.flag_batch();
        if flags.eval("emergency_shutdown", subject) == Some(true) {
            return Err(GenesisError::Disabled {
                flag: "emergency_shutdown".into(),
                state: "on",
            });
        }
        if flags.eval("orchestration_enabled", subject) == Some(false) {
            return Err(GenesisError::Disabled {
                flag: "orchestration_enabled".into(),
                state: "off",
            });
        }
        Ok(())
    }

    /// Evaluates a flag for `subject`; `None` when no flags are configured or the flag
    /// is not defined.
    pub fn flag(&self, name: &'static str, subject: &str) -> Option<bool> {
        self.flag_batch().eval(name, subject)
    }

    /// The flags as they are now, for several evaluations: one snapshot of the store
    /// and one clock reading, instead of one of each per flag.
    fn flag_batch(&self) -> FlagBatch<'_> {
        FlagBatch {
            store: self.inner.flags.as_ref().map(SharedFlags::snapshot),
            now: std::time::SystemTime::now(),
            counters: &self.inner.flag_counters,
        }
    }

    /// The rollout cohorts `subject` is in now: for each flag of
    /// [`Cohorts::FLAGS`](crate::Cohorts::FLAGS) (the ones [`Orchestrator::gate`] and
    /// [`Orchestrator::stages`] evaluate) whose answer differs between subjects now
    /// ([`Flag::splits_at`](genesis_feature_flags::Flag::splits_at)), whether `subject`
    /// gets it. Empty without flags, or when no such flag is in rollout: then it costs
    /// one snapshot of the flags and a look at each flag's strategy (no lookup by
    /// name, no hashing), and no metrics are recorded for it. Flag evaluations made here
    /// are not counted in `genesis_flag_evaluations_total` (the plan's own evaluations
    /// are).
    pub fn cohorts(&self, subject: &str) -> crate::Cohorts {
        let mut cohorts = crate::Cohorts::NONE;
        let Some(flags) = &self.inner.flags else {
            return cohorts;
        };
        let store = flags.snapshot();
        let now = genesis_feature_flags::Timestamp::from(std::time::SystemTime::now());
        // Every flag's strategy is cheaper to look at than nine lookups by name: most
        // flags are `all` or `off`, and only a flag that splits is looked for by name.
        for flag in store.flags() {
            if flag.splits_at(now)
                && let Some(slot) = HOT_FLAGS.iter().position(|f| *f == flag.name)
            {
                cohorts.add(slot, flag.evaluate(subject, now).enabled);
            }
        }
        cohorts
    }

    /// The metric handles the rollout cohorts are counted with (the server records
    /// requests and tasks of each cohort through them; a run's journal keeps a clone).
    pub fn cohort_metrics(&self) -> &Arc<crate::CohortMetrics> {
        &self.inner.cohort_metrics
    }

    /// The feature flags, if configured.
    pub fn flags(&self) -> Option<&SharedFlags> {
        self.inner.flags.as_ref()
    }

    /// The LLM providers, if configured.
    pub fn llm(&self) -> Option<&LlmProviders> {
        self.inner.llm.as_ref()
    }

    /// Plans a request synchronously with the heuristic decomposer. This is the
    /// allocation-light hot path the `plan` benchmark measures.
    ///
    /// # Errors
    /// As [`Orchestrator::plan_with`].
    pub fn plan_sync(&self, request: &str) -> Result<Plan, GenesisError> {
        self.gate("anonymous")?;
        self.screen(request)?;
        let stages = self.stages("anonymous");
        let (dag, decomposer) = info_span!("plan.decompose").in_scope(|| {
            Ok::<_, GenesisError>(if stages.decompose {
                (
                    self.inner
                        .heuristic
                        .decompose_sync(request, &self.inner.limits)?,
                    "heuristic",
                )
            } else {
                (single_task_dag(request, &self.inner.limits)?, "single_task")
            })
        })?;
        self.finish(
            request,
            request,
            Dag::Owned(dag),
            decomposer.to_owned(),
            stages.degradation(DegradationLevel::Full, None),
            &PlanOptions::default(),
            &stages,
        )
    }

    /// Routes, prices and validates a DAG you built yourself (your own decomposer, a
    /// stored workflow). The request is screened like any other.
    ///
    /// # Errors
    /// As [`Orchestrator::plan_with`].
    pub fn plan_dag(
        &self,
        request: &str,
        dag: &TaskDag,
        options: &PlanOptions,
    ) -> Result<Plan, GenesisError> {
        let subject = options.subject.as_deref().unwrap_or("anonymous");
        self.gate(subject)?;
        let full = options.full_request(request);
        self.screen(&full)?;
        let stages = self.stages_with(subject, options.day.as_ref());
        self.finish(
            &full,
            request,
            Dag::Borrowed(dag),
            "custom".to_owned(),
            stages.degradation(DegradationLevel::Full, None),
            options,
            &stages,
        )
    }

    /// Screens a request: input limits, then the injection guard at the user-request
    /// checkpoint.
    ///
    /// # Errors
    /// [`GenesisError::Rejected`] naming the rule and the value.
    pub fn screen(&self, request: &str) -> Result<(), GenesisError> {
        let _span = info_span!("plan.screen").entered();
        self.inner
            .security_limits
            .check_request(request)
            .map_err(rejected)?;
        if let Err(e) = self.inner.guard.screen(Checkpoint::UserRequest, request) {
            metrics::counter!(catalogue::INJECTION_BLOCKED_TOTAL, catalogue::labels::CHECKPOINT => "user_request")
                .increment(1);
            return Err(rejected(e));
        }
        Ok(())
    }

    /// Routes, selects models and validates a DAG that was already decomposed.
    /// `request` is what the plan keeps and agents see; completeness is judged against
    /// `asked`, the request without its context (see [`PlanOptions::context`]).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        request: &str,
        asked: &str,
        dag: Dag<'_>,
        decomposer: String,
        (degradation, degradation_reason): (DegradationLevel, Option<String>),
        options: &PlanOptions,
        stages: &Stages,
    ) -> Result<Plan, GenesisError> {
        let inner = &self.inner;
        let graph = dag.get();
        // Route one generation at a time: tasks of a generation can run at the same
        // time, so agent capacity (max concurrent tasks) is applied within it, not across
        // tasks that will never overlap.
        let nodes: Vec<&TaskNode> = graph.nodes().collect();
        let mut decisions: Vec<RouteDecision> = Vec::with_capacity(graph.len());
        // Per insertion position, the index of its decision.
        let mut decision_of = vec![usize::MAX; nodes.len()];
        // Counts as i64: tracing-opentelemetry exports unsigned values as text.
        let route_span = info_span!(
            "plan.route",
            tasks = i64::try_from(graph.len()).unwrap_or(i64::MAX)
        )
        .entered();
        for generation in graph.generation_positions() {
            // Decisions are appended in the order the tasks are passed below.
            let mut k = decisions.len();
            for &position in generation {
                if let Some(slot) = decision_of.get_mut(position) {
                    *slot = k;
                    k += 1;
                }
            }
            // Borrowed, not cloned: routing reads the tasks in place.
            let tasks = generation
                .iter()
                .filter_map(|&p| nodes.get(p))
                .map(|n| &n.task);
            route_into(
                &inner.router,
                stages.matching_off.as_deref(),
                stages.plan_context,
                tasks,
                &mut decisions,
            );
        }
        // One counter update per layer, not per task: each update is a registry lookup.
        let mut per_layer = [0u64; 4];
        for d in &decisions {
            per_layer[d.layer as usize] += 1;
        }
        for layer in [
            RouteLayer::Rule,
            RouteLayer::Text,
            RouteLayer::Capability,
            RouteLayer::Unassigned,
        ] {
            let n = per_layer[layer as usize];
            if n > 0 {
                metrics::counter!(catalogue::ROUTING_DECISIONS_TOTAL, catalogue::labels::LAYER => layer.as_str()).increment(n);
            }
        }
        drop(route_span);
        // In the DAG's insertion order, which the validator matches without a lookup.
        let mut assignments: Vec<Option<Assignment>> = vec![None; graph.len()];
        let mut dependency_lists = graph.declared_dependency_lists();
        // Per task in topological order: (position, decision, model, declared deps).
        let mut rows = Vec::with_capacity(graph.len());
        for position in graph.topological_positions() {
            let Some(node) = nodes.get(position) else {
                continue;
            };
            let task = &node.task;
            let Some(&decision) = decision_of.get(position) else {
                continue;
            };
            let Some(routed) = decisions.get(decision) else {
                continue;
            };
            let model = routed
                .agent
                .as_ref()
                .map(|_| select_model(&inner.selector, task, stages.cost_routing));
            if let Some(slot) = assignments.get_mut(position) {
                *slot = Some(Assignment {
                    task: task.id.clone(),
                    agent: routed.agent.clone(),
                    match_score: routed.match_score,
                    estimated_cost: model.as_ref().map_or(Usd::ZERO, |m| m.estimated_cost),
                });
            }
            let depends_on = dependency_lists
                .get_mut(position)
                .map(std::mem::take)
                .unwrap_or_default();
            rows.push((position, decision, model, depends_on));
        }
        let registry = inner.router.registry();
        let mut vconfig = inner.validator.clone();
        vconfig.budget = self.run_budget(options.budget)?;
        let assignments: Vec<Assignment> = {
            let mut all = Vec::with_capacity(assignments.len());
            all.extend(assignments.into_iter().flatten());
            all
        };
        let validation = {
            let span = info_span!("plan.validate", passed = tracing::field::Empty).entered();
            let validation =
                Validator::new(&registry, vconfig).validate(asked, graph, &assignments);
            span.record("passed", validation.passed);
            validation
        };
        let depth = graph.depth();
        drop(nodes);
        // The plan takes the tasks and routing decisions over: moved when the DAG is the
        // planner's own, copied when the caller lent it.
        let mut decisions: Vec<Option<RouteDecision>> = decisions.into_iter().map(Some).collect();
        let mut slots: Vec<Option<TaskNode>> = match dag {
            Dag::Owned(d) => d.into_nodes().into_iter().map(Some).collect(),
            Dag::Borrowed(d) => d.nodes().cloned().map(Some).collect(),
        };
        // Sized up front: a filtered iterator would grow the vector by doubling, copying
        // the (large) tasks each time.
        let mut planned: Vec<PlannedTask> = Vec::with_capacity(rows.len());
        planned.extend(
            rows.into_iter()
                .filter_map(|(position, decision, model, depends_on)| {
                    let node = slots.get_mut(position)?.take()?;
                    let decision = decisions.get_mut(decision)?.take()?;
                    Some(planned_task(
                        node.task,
                        node.parent,
                        node.depth,
                        depends_on,
                        decision,
                        model,
                    ))
                }),
        );
        debug!(
            tasks = planned.len(),
            score = validation.score,
            passed = validation.passed,
            "plan validated"
        );
        let plan = Plan {
            request: request.to_owned(),
            decomposer,
            degradation,
            degradation_reason,
            routing: Some(stages.routing()),
            estimated_cost: validation.estimated_cost,
            depth,
            tasks: planned,
            validation,
            planning: None,
        };
        if plan.validation.passed || !stages.validation_gate {
            Ok(plan)
        } else {
            // The first few errors: the summary is one line (a CLI's stderr, a log
            // field); the plan inside lists them all.
            const SHOWN: usize = 5;
            let errors = &plan.validation.errors;
            // An unassigned task says why routing left it so (e.g. "the description has
            // no words to match"), not only that no agent takes it (verification V11 M-3).
            let why_unassigned = |e: &genesis_aop::Finding| {
                let task = e.task.as_ref()?;
                (e.rule == "solvable.unassigned")
                    .then(|| plan.tasks.iter().find(|t| &t.id == task))
                    .flatten()
                    .filter(|t| t.agent.is_none())
                    .map(|t| t.route.explanation.to_string())
            };
            let mut rules: Vec<String> = errors
                .iter()
                .take(SHOWN)
                .map(|e| match why_unassigned(e) {
                    Some(why) => format!("{} ({}): {why}", e.message, e.rule),
                    None => format!("{} ({})", e.message, e.rule),
                })
                .collect();
            if errors.len() > SHOWN {
                rules.push(format!(
                    "and {} more errors (the plan's validation lists all {})",
                    errors.len() - SHOWN,
                    errors.len()
                ));
            }
            Err(GenesisError::InvalidPlan {
                summary: rules.join("; "),
                plan: Box::new(plan),
            })
        }
    }
}

/// The level a budget fraction left indicates on its own (for the degradation reason).
fn level_name(left: f64, cfg: &DegradationConfig) -> &'static str {
    if left <= 0.0 || left < cfg.minimal_budget_fraction {
        DegradationLevel::Minimal.as_str()
    } else {
        DegradationLevel::LlmFallback.as_str()
    }
}

/// The DAG of a request taken as one task (decomposition off): a `generic` task whose
/// description is the request.
fn single_task_dag(request: &str, limits: &Limits) -> Result<TaskDag, GenesisError> {
    let mut dag = TaskDag::new(limits.clone());
    dag.add_task(
        Task::new(TaskId::new("t1"), genesis_core::TaskKind::Generic, request),
        None,
    )?;
    Ok(dag)
}

impl Stages {
    /// The plan's degradation: what decomposition came to (`planned`), or `minimal`
    /// when the level is (it changed how the plan was routed). The `llm_fallback` level
    /// alone changes nothing in a plan — open provider breakers fail LLM calls on their
    /// own, and a plan the LLM did decompose is not degraded — so it is not reported.
    fn degradation(
        &self,
        planned: DegradationLevel,
        reason: Option<String>,
    ) -> (DegradationLevel, Option<String>) {
        if self.level == DegradationLevel::Minimal && planned < DegradationLevel::Minimal {
            return (self.level, self.degraded.clone().or(reason));
        }
        (planned, reason)
    }

    /// The routing stages (matching, plan context, cost routing), as a plan records
    /// them.
    pub fn routing(&self) -> PlanRouting {
        PlanRouting {
            matching_off: self.matching_off.clone(),
            plan_context: self.plan_context,
            cost_routing: self.cost_routing,
        }
    }
}

/// One snapshot of the feature flags and one instant: see [`Orchestrator::flag`].
struct FlagBatch<'a> {
    store: Option<Arc<genesis_feature_flags::FlagStore>>,
    now: std::time::SystemTime,
    counters: &'a FlagCounters,
}

impl FlagBatch<'_> {
    /// Evaluates `name` for `subject` and counts the evaluation
    /// (`genesis_flag_evaluations_total`); `None` when no flags are configured or the
    /// flag is not defined.
    fn eval(&self, name: &'static str, subject: &str) -> Option<bool> {
        let eval = self.store.as_ref()?.evaluate(name, subject, self.now);
        if eval.reason == genesis_feature_flags::Reason::UnknownFlag {
            return None;
        }
        self.counters.increment(name, eval.enabled);
        Some(eval.enabled)
    }
}

/// The flags every request evaluates (the kill switches of [`Orchestrator::gate`] and the
/// stage flags of [`Orchestrator::stages`]).
pub(crate) const HOT_FLAGS: [&str; 9] = [
    "emergency_shutdown",
    "orchestration_enabled",
    "llm_integration_enabled",
    "halo_routing",
    "tumix_early_stopping",
    "htdag_decomposition",
    "new_router_rollout",
    "daao_cost_routing",
    "aop_validation",
];

/// `genesis_flag_evaluations_total` handles for [`HOT_FLAGS`] (`[off, on]` each),
/// registered with the metrics recorder at their first use and kept: a plan evaluates
/// nine flags, and registering a labelled counter looks it up in the recorder's registry
/// every time (about 1,000 instructions each with the Prometheus recorder). The
/// recorder must therefore be installed before the first request, as the server does.
/// Other flags are counted through the registry at each evaluation.
#[derive(Default)]
struct FlagCounters([[std::sync::OnceLock<metrics::Counter>; 2]; HOT_FLAGS.len()]);

impl FlagCounters {
    fn increment(&self, name: &'static str, enabled: bool) {
        let register = || {
            metrics::counter!(
                catalogue::FLAG_EVALUATIONS_TOTAL,
                catalogue::labels::FLAG => name,
                catalogue::labels::RESULT => if enabled { "on" } else { "off" }
            )
        };
        match HOT_FLAGS.iter().position(|f| *f == name) {
            Some(i) => self.0[i][usize::from(enabled)]
                .get_or_init(register)
                .increment(1),
            None => register().increment(1),
        }
    }
}

/// Routes `tasks` (one generation of a plan, or one follow-up update) under the routing
/// stages, appending one decision per task to `out`: by kind only when matching is off
/// (`why` goes into every explanation), else with or without plan context.
fn route_into<'t>(
    router: &Router,
    matching_off: Option<&str>,
    plan_context: bool,
    tasks: impl IntoIterator<Item = &'t Task>,
    out: &mut Vec<RouteDecision>,
) {
    match (matching_off, plan_context) {
        (Some(why), _) => router.route_all_by_kind_into(tasks, why, out),
        (None, true) => router.route_all_into(tasks, out),
        (None, false) => router.route_all_into_per_task(tasks, out),
    }
}

/// The model of a routed task: the cheapest capable one with cost routing on, else the
/// strongest.
fn select_model(
    selector: &ModelSelector,
    task: &Task,
    cost_routing: bool,
) -> genesis_daao::ModelChoice {
    if cost_routing {
        selector.select(task)
    } else {
        selector.select_strongest(task, "feature flag daao_cost_routing is off")
    }
}

/// The DAG a plan is made from: the planner's own (its tasks are moved into the plan)
/// or the caller's (copied).
#[allow(
    clippy::large_enum_variant,
    reason = "one short-lived value per plan; boxing would cost an allocation"
)]
enum Dag<'a> {
    Owned(TaskDag),
    Borrowed(&'a TaskDag),
}

impl Dag<'_> {
    fn get(&self) -> &TaskDag {
        match self {
            Dag::Owned(d) => d,
            Dag::Borrowed(d) => d,
        }
    }
}

/// Per-run options.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// The run id; generated when `None`.
    pub run_id: Option<RunId>,
    /// Where events are journaled (the server passes its run store).
    pub journal: Option<Arc<dyn RunJournal>>,
    /// Tasks that finished before a restart; they are not run again.
    pub resumed: Vec<TaskReport>,
    /// The run budget; `None` uses the configured per-run budget. It can only lower
    /// that budget: above it, [`Orchestrator::execute`] fails with
    /// [`GenesisError::BudgetAboveLimit`].
    pub budget: Option<Usd>,
    /// Who asked (user, tenant or API key id): the subject feature flags are evaluated
    /// for when the run starts and at every LLM agent call; `None` is `anonymous`. A
    /// resumed run: the subject it was started for (the store journals it, see
    /// [`crate::store::RunRecord::subject`]).
    pub subject: Option<String>,
    /// Already spent today by other runs (for the daily budget), when `day` is `None`:
    /// the run then keeps a day total of its own, blind to runs started after it.
    pub day_spent: Usd,
    /// The day's spend shared by every run (for the daily budget): the run checks and
    /// charges it, so concurrent runs cannot each spend the whole daily budget. When
    /// set, `day_spent` is ignored.
    pub day: Option<DaySpend>,
    /// Today's spend of the runs of [`RunOptions::subject`]: with
    /// `budget.per_subject_day`, the run also checks and charges it, so one caller's
    /// runs together cannot spend more than that in a day (the day budget is shared by
    /// every caller). `None`: no per-subject limit for this run.
    pub subject_day: Option<DaySpend>,
    /// What the run spent before a restart (resumed runs: the journaled run cost). The
    /// run's total, budget and reported cost start from the larger of this and the cost
    /// of the `resumed` tasks; the day total is not charged again.
    pub spent: Usd,
    /// The correlation id of the request that started the run (the server passes the
    /// request's `x-correlation-id`): a field of the run's `orchestrate` span, so every
    /// log line of the run carries it. `None` for runs no request started (resumed).
    pub correlation_id: Option<String>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("run_id", &self.run_id)
            .field("resumed", &self.resumed.len())
            .field("budget", &self.budget)
            .field("spent", &self.spent)
            .field("correlation_id", &self.correlation_id)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// Plans `request` and starts executing it. Returns once the run has started; the
    /// handle streams events and yields the result.
    ///
    /// # Errors
    /// Planning errors (see [`Orchestrator::plan_with`]).
    pub async fn run(&self, request: &str) -> Result<RunHandle, GenesisError> {
        let plan = self.plan(request).await?;
        self.execute(plan, RunOptions::default())
    }

    /// Starts executing a plan (fresh, or resumed with `options.resumed`).
    ///
    /// # Errors
    /// [`GenesisError::BudgetAboveLimit`] when `options.budget` is above the configured
    /// per-run budget; [`GenesisError::Decomposition`] if the plan's DAG is invalid
    /// under the limits; [`GenesisError::UnservedAgents`] (rule `agent_backend`) when a
    /// task still to run has no candidate agent a backend serves
    /// ([`Orchestrator::check_served`]; tasks in `options.resumed` that already ended
    /// are not run again and not checked); [`GenesisError::InvalidPlan`] (rule
    /// `structure.empty`) for a plan without tasks; [`GenesisError::NoRuntime`] (rule
    /// `tokio_runtime`) when called outside a tokio runtime (the run is spawned on the
    /// caller's runtime). Each is refused before any agent is called or anything is
    /// charged.
    pub fn execute(&self, plan: Plan, options: RunOptions) -> Result<RunHandle, GenesisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(GenesisError::NoRuntime {
                operation: "Orchestrator::execute",
            });
        }
        if plan.tasks.is_empty() {
            return Err(GenesisError::InvalidPlan {
                summary: "the plan has no tasks (structure.empty)".into(),
                plan: Box::new(plan),
            });
        }
        let inner = &self.inner;
        let budget = Budget {
            per_run: self.run_budget(options.budget)?,
            per_day: inner.budget.per_day,
            per_subject_day: inner.budget.per_subject_day,
        };
        let dag = plan.to_dag(&inner.limits)?;
        // Before the ledger exists and anything starts. Tasks that ended before a
        // restart are not run again: only the others need a backend.
        let mut unserved = self.unserved_tasks(&plan);
        if !options.resumed.is_empty() {
            unserved.retain(|t| {
                !options
                    .resumed
                    .iter()
                    .any(|r| r.task_id == t.id && r.status.is_terminal())
            });
        }
        unserved_error(unserved)?;
        let registry = inner.router.registry();
        let caps = registry
            .iter()
            .map(|a| (a.id.clone(), a.max_concurrent_tasks))
            .collect();
        // A resumed run goes on from what it spent before the restart: its budget and
        // its journaled cost are for the whole run, not for this process's part.
        // A fresh run starts from its planning's spend (already charged to the day).
        let resumed_cost: Usd = options.resumed.iter().map(|t| t.cost).sum::<Usd>()
            + plan.planning.map_or(Usd::ZERO, |p| p.cost);
        let spent_before = if options.spent > resumed_cost {
            options.spent
        } else {
            resumed_cost
        };
        let ledger = match &options.day {
            Some(day) => CostLedger::sharing_day(budget, day.shared()),
            None => CostLedger::new(budget, options.day_spent),
        }
        .with_run_spent(spent_before);
        let ledger = match &options.subject_day {
            Some(subject_day) => ledger.with_subject_day(subject_day.shared()),
            None => ledger,
        };
        let subject: Arc<str> = Arc::from(options.subject.as_deref().unwrap_or("anonymous"));
        let stages = self.stages_with(&subject, options.day.as_ref());
        // Follow-ups are routed and priced the way the plan was, whatever the flags and
        // the level say now (a resumed run: as its stored plan was). A plan that does not
        // record its routing (stored before plans did) takes the stages in force now.
        let routing = plan.routing.clone().unwrap_or_else(|| stages.routing());
        let spec = RunSpec {
            run_id: options.run_id.unwrap_or_else(new_run_id),
            subject,
            refinement: stages.refinement,
            plan,
            dag,
            ledger,
            journal: options.journal.unwrap_or_else(|| Arc::new(NoJournal)),
            replanner: Arc::new(Replan {
                inner: Arc::clone(&self.inner),
                routing,
            }),
            learner: inner
                .learn_from_runs
                .then(|| Arc::new(Learn(Arc::clone(&self.inner))) as Arc<dyn Learner>),
            resumed: options.resumed,
            correlation_id: options.correlation_id,
        };
        Ok(inner.executor.start(spec, caps))
    }

    /// The executor (breaker states, configuration).
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// True when a backend carries out the tasks of agent `id`: its own (HTTP, command,
    /// or one given to [`OrchestratorBuilder::agents`]) or the fallback every agent
    /// without one gets (LLM agents, `llm.agents = true`). One hash lookup.
    pub fn serves_agent(&self, id: &str) -> bool {
        self.inner.agents.serves(id)
    }

    /// The tasks of `plan` that no backend can carry out: neither their agent nor any of
    /// their routing alternatives is served ([`Orchestrator::serves_agent`]). Their run
    /// would fail them, and the tasks that depend on them, with "no backend is
    /// configured for agent …": refuse the run instead. Empty when every task has a
    /// served candidate. One hash lookup per candidate until a served one is found.
    pub fn unserved_tasks<'p>(&self, plan: &'p Plan) -> Vec<&'p PlannedTask> {
        plan.tasks
            .iter()
            .filter(|t| {
                !t.agent
                    .iter()
                    .chain(t.route.alternatives.iter().map(|a| &a.agent))
                    .any(|a| self.serves_agent(a.as_str()))
            })
            .collect()
    }

    /// Refuses a plan that has a task no backend can carry out
    /// ([`Orchestrator::unserved_tasks`]): [`GenesisError::UnservedAgents`] (rule
    /// `agent_backend`) names the first such task, its candidate agents, how many other
    /// tasks are unserved and what to configure. [`Orchestrator::execute`] checks it
    /// before anything runs; call it to refuse a plan before journaling it.
    ///
    /// # Errors
    /// [`GenesisError::UnservedAgents`].
    pub fn check_served(&self, plan: &Plan) -> Result<(), GenesisError> {
        unserved_error(self.unserved_tasks(plan))
    }

    /// Applies the outcomes of finished runs that are still waiting for their batch (see
    /// [`OrchestratorBuilder::learn_from_runs`]) to the router now; returns how many.
    /// Call it before reading or saving the router's learned state, e.g. at shutdown.
    pub fn flush_learning(&self) -> usize {
        self.inner.apply_learning()
    }
}

/// [`GenesisError::UnservedAgents`] for the first of `unserved`, if any.
fn unserved_error(unserved: Vec<&PlannedTask>) -> Result<(), GenesisError> {
    let Some(first) = unserved.first() else {
        return Ok(());
    };
    Err(GenesisError::UnservedAgents {
        task: first.id.clone(),
        agents: first
            .agent
            .iter()
            .chain(first.route.alternatives.iter().map(|a| &a.agent))
            .cloned()
            .collect(),
        others: unserved.len() - 1,
    })
}

/// Takes finished runs' outcomes for the router.
struct Learn(Arc<Inner>);

impl Learner for Learn {
    fn learn(&self, run_id: &RunId, tries: Vec<(Task, AgentTry)>) {
        let learning = &self.0.learning;
        let was_empty = {
            let mut pending = learning
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let was_empty = pending.is_empty();
            pending.extend(tries.into_iter().map(|(task, t)| Pending {
                run: run_id.clone(),
                task,
                agent: t.agent,
                success: t.success,
                latency: t.latency,
                cost: t.cost,
            }));
            was_empty
        };
        // The first outcome of a batch schedules its application; later ones join it.
        if was_empty {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let inner = Arc::clone(&self.0);
                    runtime.spawn(async move {
                        tokio::time::sleep(inner.learning.interval).await;
                        let _ = tokio::task::spawn_blocking(move || inner.apply_learning()).await;
                    });
                }
                Err(_) => {
                    self.0.apply_learning();
                }
            }
        }
    }
}

/// Outcomes of finished runs waiting to be applied to the router. Applying costs a
/// copy of the registry (and a re-index when examples are added) whatever the batch
/// size, so outcomes are applied in batches, at most `interval` after they arrive.
struct Learning {
    pending: std::sync::Mutex<Vec<Pending>>,
    interval: std::time::Duration,
}

/// One agent's go at one task, waiting for [`Learning`].
struct Pending {
    run: RunId,
    task: Task,
    agent: genesis_core::AgentId,
    success: bool,
    latency: std::time::Duration,
    cost: Usd,
}

impl Inner {
    /// Applies the pending outcomes to the router in one batch; returns how many.
    fn apply_learning(&self) -> usize {
        let pending = std::mem::take(
            &mut *self
                .learning
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if pending.is_empty() {
            return 0;
        }
        let router = &self.router;
        let registry = router.registry();
        // Agents outside the registry (removed by a reload since the plan was made) are
        // skipped: one unknown agent would otherwise void the whole batch.
        let outcomes: Vec<genesis_halo::Outcome<'_>> = pending
            .iter()
            .filter(|p| registry.get(p.agent.as_str()).is_some())
            .map(|p| genesis_halo::Outcome {
                task: &p.task,
                agent: &p.agent,
                success: p.success,
                latency: p.latency,
                cost: p.cost,
                plan: Some(p.run.as_str()),
            })
            .collect();
        if outcomes.is_empty() {
            return 0;
        }
        let succeeded = outcomes.iter().filter(|o| o.success).count();
        match router.record_outcomes(&outcomes) {
            Ok(()) => {
                debug!(
                    outcomes = outcomes.len(),
                    succeeded, "router learned from finished runs"
                );
                metrics::counter!(catalogue::ROUTING_OUTCOMES_TOTAL, catalogue::labels::RESULT => "success")
                    .increment(succeeded as u64);
                metrics::counter!(catalogue::ROUTING_OUTCOMES_TOTAL, catalogue::labels::RESULT => "failure")
                    .increment((outcomes.len() - succeeded) as u64);
                outcomes.len()
            }
            Err(e) => {
                warn!(error = %e, "router could not learn from finished runs");
                0
            }
        }
    }
}

/// Routes and prices follow-up tasks proposed during one run, with the routing stages
/// of the run's plan: as `plan()` would have routed them in that plan (they are one
/// generation: every one waits for its proposer only).
struct Replan {
    inner: Arc<Inner>,
    routing: PlanRouting,
}

impl Replanner for Replan {
    fn plan_tasks(&self, after: &TaskId, nodes: &[TaskNode]) -> Vec<PlannedTask> {
        let inner = &self.inner;
        let routing = &self.routing;
        let mut decisions = Vec::with_capacity(nodes.len());
        route_into(
            &inner.router,
            routing.matching_off.as_deref(),
            routing.plan_context,
            nodes.iter().map(|n| &n.task),
            &mut decisions,
        );
        nodes
            .iter()
            .zip(decisions)
            .map(|(node, decision)| {
                let model = decision
                    .agent
                    .as_ref()
                    .map(|_| select_model(&inner.selector, &node.task, routing.cost_routing));
                // Where the DAG put it: under the proposer's parent, after the proposer
                // (a resumed run rebuilds its DAG from these fields).
                planned_task(
                    node.task.clone(),
                    node.parent.clone(),
                    node.depth,
                    vec![after.clone()],
                    decision,
                    model,
                )
            })
            .collect()
    }
}

fn planned_task(
    task: Task,
    parent: Option<genesis_core::TaskId>,
    depth: usize,
    depends_on: Vec<genesis_core::TaskId>,
    decision: RouteDecision,
    model: Option<genesis_daao::ModelChoice>,
) -> PlannedTask {
    PlannedTask {
        id: task.id,
        parent,
        depth,
        kind: task.kind,
        description: task.description,
        depends_on,
        required_skills: task.required_skills,
        metadata: task.metadata,
        estimated_tokens: task.estimated_tokens,
        agent: decision.agent,
        route: TaskRoute {
            layer: decision.layer,
            score: decision.score,
            match_score: decision.match_score,
            explanation: decision.explanation,
            alternatives: decision.alternatives,
        },
        model: model.map(|m| TaskModel {
            model: m.model,
            difficulty: m.difficulty,
            estimated_cost: m.estimated_cost,
            reason: m.reason,
        }),
    }
}

/// A new run id: time-ordered and unique within and across processes.
pub fn new_run_id() -> RunId {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // RandomState is seeded from OS randomness once per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u128(millis);
    RunId::new(format!("run_{millis:012x}{:08x}", h.finish() as u32))
}

/// Converts a security rejection into the facade's error, keeping the rule name.
fn rejected(e: SecurityError) -> GenesisError {
    let rule = match &e {
        SecurityError::EmptyRequest => "non_empty_request".to_owned(),
        SecurityError::RequestTooLong { .. } => "max_request_chars".to_owned(),
        // The rule's id only (`injection:model:classifier`); its evidence, when the
        // learned model decided ("(no rule matched; strongest evidence: …)"), stays in
        // the reason.
        SecurityError::InjectionDetected { rule, .. } => {
            let id = rule.split_once(" (").map_or(rule.as_str(), |(id, _)| id);
            format!("injection:{id}")
        }
        other => other.category().as_str().to_owned(),
    };
    GenesisError::Rejected {
        rule,
        reason: e.to_string(),
        error: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orchestrator_is_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Orchestrator>();
    }
}
