//! A decomposer that needs no LLM: request families with multi-level templates, and
//! clause splitting for compound requests.
//!
//! How a request is read:
//! 1. It is split into sentences. A sentence is an *ask* when it starts with an
//!    imperative verb or carries a request marker (`need`, `must`, `should`, `please`, a
//!    question); otherwise it is a *statement*. When a request has asks, its statements
//!    are context (recorded as the `context` metadata of the top-level tasks), not
//!    tasks. When it has none, it is a *report* ("Production is down: …", "Users can't
//!    log in"): its sentences are the asks, and a problem family needs less evidence.
//! 2. Asks are split into clauses at sequencing words (`then`, `after that`,
//!    `followed by`, and `dann`/`puis`/`luego`) and at `and`/commas (`und`/`et`/`y`)
//!    that introduce a new action verb ("launch a campaign **and analyse** the results").
//! 3. Each clause is scored against eight request families by weighted keywords (stems
//!    such as `analy*` cover analyse/analysis/analytics) and a few two-word phrases
//!    ("does not work", "press release"). A family needs a score of at least
//!    [`FAMILY_THRESHOLD`] *and* evidence beyond one word: two distinct cues, or one
//!    strong cue that heads the clause ("Deploy …", "Research …"); in a report, one
//!    cue of a problem family (bug fix, incident response) is enough, and a problem
//!    family wins over the others. A clause whose verb names work a family's template
//!    has no step for ("estimate the hosting cost", "hire engineers") gets no family,
//!    and neither does one that asks for a single phase of the work ("write
//!    integration tests for the API": its hints weigh in for test, design, specify,
//!    document or security work).
//!    Clauses of fewer than three words never get a template.
//! 4. A clause of a family gets that family's template: phases with subtasks and
//!    dependencies between them. Any other clause becomes one task whose kind weighs
//!    every hint word (nouns outweigh generic verbs: "write unit tests" is a test); only
//!    when no word suggests a kind is it `generic`.
//! 5. A later clause that only asks again for a phase an earlier clause's template has,
//!    about the same work ("…, then write unit tests, then deploy it to staging"), joins
//!    that phase instead of planning the work twice. A deployment target named in a
//!    clause ("to staging") replaces `production` in the template's texts.
//! 6. A clause waits for the one before it when a sequencing word introduces it or it
//!    refers back ("analyse **the results**"); a test, deployment, monitoring,
//!    documentation, review or fix clause waits for the work written before it; other clauses are
//!    independent and may run in parallel. A clause repeated word for word is planned
//!    once.
//!
//! If the expansion would exceed the task or depth limit, templates are shallowed
//! (phases without subtasks, then one task per clause) instead of failing.

use genesis_core::{Task, TaskId, TaskKind};
use serde::{Deserialize, Serialize};

use crate::{HtdagError, Limits, TaskDag};

/// Minimum keyword score for a clause to be treated as a member of a family.
pub const FAMILY_THRESHOLD: f32 = 2.0;

/// Longest subject (in bytes, cut at a word boundary) quoted in generated descriptions.
const MAX_SUBJECT_BYTES: usize = 200;

/// The request families the heuristic decomposer has templates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Starting a software business: discovery, product, launch, go-to-market, metrics.
    SaasBusiness,
    /// Building an application, service or feature.
    SoftwareProduct,
    /// Marketing campaigns and promotion.
    MarketingCampaign,
    /// Analysing data, metrics or results.
    DataAnalysis,
    /// Researching a topic and writing it up.
    ResearchReport,
    /// Deployment, infrastructure and operations.
    DeploymentOps,
    /// Fixing a defect.
    BugFix,
    /// Responding to a production incident: triage, mitigate, verify, follow up.
    IncidentResponse,
}

impl Family {
    /// Every family, in tie-break order (earlier wins a tie).
    pub const ALL: [Family; 8] = [
        Family::SaasBusiness,
        Family::BugFix,
        Family::IncidentResponse,
        Family::MarketingCampaign,
        Family::DeploymentOps,
        Family::DataAnalysis,
        Family::ResearchReport,
        Family::SoftwareProduct,
    ];

    /// The snake_case name recorded in task metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::SaasBusiness => "saas_business",
            Family::SoftwareProduct => "software_product",
            Family::MarketingCampaign => "marketing_campaign",
            Family::DataAnalysis => "data_analysis",
            Family::ResearchReport => "research_report",
            Family::DeploymentOps => "deployment_ops",
            Family::BugFix => "bug_fix",
            Family::IncidentResponse => "incident_response",
        }
    }

    fn keywords(self) -> &'static [Kw] {
        match self {
            Family::SaasBusiness => SAAS_KW,
            Family::SoftwareProduct => SOFTWARE_KW,
            Family::MarketingCampaign => MARKETING_KW,
            Family::DataAnalysis => ANALYSIS_KW,
            Family::ResearchReport => RESEARCH_KW,
            Family::DeploymentOps => OPS_KW,
            Family::BugFix => BUG_KW,
            Family::IncidentResponse => INCIDENT_KW,
        }
    }

    fn template(self) -> &'static [Step] {
        match self {
            Family::SaasBusiness => SAAS,
            Family::SoftwareProduct => SOFTWARE,
            Family::MarketingCampaign => MARKETING,
            Family::DataAnalysis => ANALYSIS,
            Family::ResearchReport => RESEARCH,
            Family::DeploymentOps => OPS,
            Family::BugFix => BUG,
            Family::IncidentResponse => INCIDENT,
        }
    }

    /// The kind of the task that stands for the whole family in a compound request.
    fn kind(self) -> TaskKind {
        match self {
            Family::SaasBusiness | Family::SoftwareProduct | Family::BugFix => TaskKind::Implement,
            Family::MarketingCampaign => TaskKind::Marketing,
            Family::DataAnalysis => TaskKind::Analyze,
            Family::ResearchReport => TaskKind::Research,
            Family::DeploymentOps => TaskKind::Deploy,
            Family::IncidentResponse => TaskKind::Monitor,
        }
    }

    /// Whether any step of the family's template, at any level, has `kind`.
    fn has_kind(self, kind: TaskKind) -> bool {
        self.template()
            .iter()
            .any(|s| s.kind == kind || s.children.iter().any(|c| c.kind == kind))
    }

    /// Bug fixes and incidents: what a report of a problem asks for.
    fn is_problem(self) -> bool {
        matches!(self, Family::BugFix | Family::IncidentResponse)
    }
}

/// Number of families.
const FAMILIES: usize = Family::ALL.len();

/// Weight from which a single keyword heading a clause is evidence enough for a family.
const STRONG_CUE: f32 = 3.0;

/// A keyword: a whole word, or a stem when `prefix` is true.
struct Kw {
    word: &'static str,
    prefix: bool,
    weight: f32,
}

const fn w(word: &'static str, weight: f32) -> Kw {
    Kw {
        word,
        prefix: false,
        weight,
    }
}

const fn p(word: &'static str, weight: f32) -> Kw {
    Kw {
        word,
        prefix: true,
        weight,
    }
}

impl Kw {
    /// Whether `word` carries this keyword (the keyword index's reference behaviour).
    #[cfg(test)]
    fn matches(&self, word: &str) -> bool {
        if self.prefix {
            word.starts_with(self.word)
        } else {
            word == self.word
        }
    }
}

const SAAS_KW: &[Kw] = &[
    w("saas", 3.0),
    w("business", 1.5),
    w("startup", 2.0),
    p("subscription", 2.0),
    w("company", 1.0),
    w("venture", 1.5),
    p("monetiz", 1.5),
    p("monetis", 1.5),
    w("b2b", 2.0),
    w("b2c", 2.0),
    w("mrr", 2.0),
    w("revenue", 1.0),
];

const SOFTWARE_KW: &[Kw] = &[
    w("app", 1.5),
    w("apps", 1.5),
    p("application", 1.5),
    p("website", 2.0),
    w("web", 1.0),
    w("api", 2.0),
    w("apis", 2.0),
    w("software", 2.0),
    w("platform", 1.0),
    w("service", 0.5),
    w("tool", 0.5),
    p("feature", 1.5),
    w("build", 1.0),
    p("develop", 1.5),
    p("implement", 1.5),
    w("code", 1.5),
    w("backend", 2.0),
    w("frontend", 2.0),
    w("mobile", 1.5),
    w("dashboard", 1.0),
    w("system", 0.5),
    p("integrat", 1.0),
    w("crud", 2.0),
    w("database", 1.0),
    w("endpoint", 1.5),
    p("microservice", 2.0),
    w("library", 1.5),
    w("cli", 2.0),
    w("prototype", 1.0),
    w("mvp", 1.5),
];

const MARKETING_KW: &[Kw] = &[
    p("marketing", 3.0),
    p("campaign", 3.0),
    p("kampagn", 3.0),
    p("promot", 2.0),
    p("advertis", 2.5),
    p("brand", 1.5),
    w("seo", 2.5),
    w("social", 1.5),
    w("media", 1.0),
    w("press", 2.0),
    w("landing", 1.0),
    p("email", 1.0),
    p("announce", 2.0),
    w("blog", 1.5),
    w("audience", 1.5),
    p("newsletter", 2.0),
    p("launch", 1.5),
    w("growth", 1.0),
    w("ads", 2.0),
    w("content", 1.0),
    p("influencer", 2.0),
    w("go-to-market", 2.5),
    w("gtm", 2.0),
    w("awareness", 1.5),
    w("leads", 1.0),
];

const ANALYSIS_KW: &[Kw] = &[
    p("analy", 3.0),
    w("data", 2.0),
    w("metrics", 2.0),
    p("kpi", 2.0),
    w("results", 1.5),
    p("statistic", 2.0),
    p("dataset", 2.0),
    w("trends", 1.5),
    w("churn", 1.5),
    p("forecast", 1.5),
    p("visuali", 2.0),
    w("measure", 1.5),
    w("insights", 1.5),
    w("performance", 0.5),
    w("cohort", 2.0),
    w("conversion", 1.0),
    w("sql", 1.0),
];

const RESEARCH_KW: &[Kw] = &[
    w("research", 3.0),
    p("investigat", 2.0),
    w("study", 2.0),
    w("report", 2.0),
    w("survey", 1.5),
    w("literature", 2.5),
    w("compare", 1.5),
    w("comparison", 1.5),
    p("competitor", 1.5),
    w("market", 1.0),
    p("whitepaper", 2.5),
    p("summar", 1.5),
    w("explore", 1.0),
    w("sources", 1.5),
    w("evaluate", 1.0),
    w("trade-offs", 1.0),
];

const OPS_KW: &[Kw] = &[
    p("deploy", 3.0),
    w("kubernetes", 3.0),
    w("k8s", 3.0),
    w("docker", 2.0),
    p("infrastructure", 2.5),
    p("migrat", 2.0),
    w("ci", 1.5),
    w("cd", 1.0),
    w("ci/cd", 2.5),
    w("pipeline", 1.5),
    p("server", 1.5),
    w("cloud", 1.5),
    w("rollout", 2.0),
    w("monitoring", 2.0),
    w("production", 1.5),
    p("scal", 1.0),
    w("terraform", 3.0),
    w("devops", 3.0),
    w("release", 1.5),
    w("hosting", 2.0),
    w("uptime", 2.0),
    w("staging", 2.0),
    w("aws", 1.5),
    w("gcp", 1.5),
    w("azure", 1.5),
];

const BUG_KW: &[Kw] = &[
    w("bug", 3.0),
    w("bugs", 3.0),
    w("fix", 2.5),
    w("fixes", 2.5),
    p("crash", 2.5),
    w("error", 2.0),
    w("errors", 2.0),
    w("can't", 2.0),
    w("cannot", 2.0),
    w("wrong", 1.5),
    p("investigat", 1.0),
    w("broken", 2.5),
    p("regression", 2.5),
    w("issue", 1.0),
    w("failing", 2.0),
    w("fails", 2.0),
    w("exception", 2.0),
    p("debug", 2.5),
    w("leak", 2.0),
    w("slow", 1.0),
    w("patch", 1.5),
    w("hotfix", 3.0),
    w("defect", 3.0),
    w("panic", 2.0),
    w("500", 1.0),
];

const INCIDENT_KW: &[Kw] = &[
    p("incident", 3.0),
    p("outage", 3.0),
    w("down", 1.5),
    w("downtime", 2.5),
    w("degraded", 2.0),
    w("unavailable", 2.0),
    w("unreachable", 2.0),
    w("on-call", 2.0),
    p("pager", 2.0),
    w("sev1", 3.0),
    w("sev2", 3.0),
    p("postmortem", 2.0),
    p("post-mortem", 2.0),
    w("rollback", 1.5),
    w("production", 1.0),
    w("prod", 1.0),
    w("since", 1.0),
    w("timeouts", 1.5),
    w("500", 1.5),
    w("502", 1.5),
    w("503", 1.5),
    w("503s", 1.5),
    w("504", 1.5),
    w("5xx", 2.0),
];

/// Two-word phrases that are evidence for a family: (first word, second word, family,
/// weight). Each counts as one cue on top of its words' own keywords.
const PHRASES: &[(&str, &str, Family, f32)] = &[
    ("product", "launch", Family::MarketingCampaign, 2.0),
    ("press", "release", Family::MarketingCampaign, 2.0),
    ("social", "media", Family::MarketingCampaign, 1.0),
    ("landing", "page", Family::MarketingCampaign, 1.0),
    ("not", "work", Family::BugFix, 2.5),
    ("not", "working", Family::BugFix, 2.5),
    ("doesn't", "work", Family::BugFix, 2.5),
    ("don't", "work", Family::BugFix, 2.5),
    ("stopped", "working", Family::BugFix, 2.5),
    ("no", "longer", Family::BugFix, 2.0),
    ("is", "down", Family::IncidentResponse, 2.0),
    ("are", "down", Family::IncidentResponse, 2.0),
    ("roll", "back", Family::IncidentResponse, 1.0),
];

/// One template step: a task, its sibling dependencies (by key) and its subtasks.
struct Step {
    key: &'static str,
    kind: TaskKind,
    text: &'static str,
    skills: &'static [&'static str],
    deps: &'static [&'static str],
    children: &'static [Step],
}

const fn leaf(
    key: &'static str,
    kind: TaskKind,
    text: &'static str,
    skills: &'static [&'static str],
    deps: &'static [&'static str],
) -> Step {
    Step {
        key,
        kind,
        text,
        skills,
        deps,
        children: &[],
    }
}

const fn phase(
    key: &'static str,
    kind: TaskKind,
    text: &'static str,
    deps: &'static [&'static str],
    children: &'static [Step],
) -> Step {
    Step {
        key,
        kind,
        text,
        skills: &[],
        deps,
        children,
    }
}

use TaskKind as K;

const SAAS: &[Step] = &[
    phase(
        "discovery",
        K::Research,
        "Validate the market and the customers for {s}",
        &[],
        &[
            leaf(
                "market",
                K::Research,
                "Research the market, competitors and target customers for {s}",
                &["market research"],
                &[],
            ),
            leaf(
                "requirements",
                K::Specify,
                "Write the product requirements and user stories for {s}",
                &["requirements"],
                &["market"],
            ),
            leaf(
                "pricing",
                K::Finance,
                "Design the pricing model and unit economics for {s}",
                &["pricing"],
                &["market"],
            ),
        ],
    ),
    phase(
        "product",
        K::Implement,
        "Build the product for {s}",
        &["discovery"],
        &[
            leaf(
                "architecture",
                K::Design,
                "Design the system architecture and data model for {s}",
                &["architecture"],
                &[],
            ),
            leaf(
                "backend",
                K::Backend,
                "Implement the backend API, data store and billing integration for {s}",
                &["api", "database"],
                &["architecture"],
            ),
            leaf(
                "frontend",
                K::Frontend,
                "Implement the web front end and onboarding flow for {s}",
                &["ui"],
                &["architecture"],
            ),
            leaf(
                "security",
                K::Security,
                "Review authentication, tenant isolation and data protection for {s}",
                &["security review"],
                &["backend"],
            ),
            leaf(
                "qa",
                K::Test,
                "Write and run integration and end-to-end tests for {s}",
                &["testing"],
                &["backend", "frontend"],
            ),
        ],
    ),
    phase(
        "launch",
        K::Deploy,
        "Launch {s} in {env}",
        &["product"],
        &[
            leaf(
                "deploy",
                K::Deploy,
                "Deploy {s} to {env} through a CI/CD pipeline",
                &["ci/cd"],
                &[],
            ),
            leaf(
                "monitoring",
                K::Monitor,
                "Set up monitoring, alerting and uptime checks for {s}",
                &["observability"],
                &["deploy"],
            ),
        ],
    ),
    phase(
        "go_to_market",
        K::Marketing,
        "Take {s} to market",
        &["discovery"],
        &[
            leaf(
                "campaign",
                K::Marketing,
                "Plan and run the launch marketing campaign for {s}",
                &["campaign"],
                &[],
            ),
            leaf(
                "sales",
                K::Sales,
                "Build the sales pipeline and outreach for {s}",
                &["outreach"],
                &["campaign"],
            ),
            leaf(
                "support",
                K::Support,
                "Set up customer support and help-centre articles for {s}",
                &["customer support"],
                &[],
            ),
        ],
    ),
    phase(
        "traction",
        K::Analyze,
        "Measure the traction of {s}",
        &["launch", "go_to_market"],
        &[
            leaf(
                "metrics",
                K::Analyze,
                "Track activation, retention and revenue metrics for {s}",
                &["analytics"],
                &[],
            ),
            leaf(
                "financials",
                K::Finance,
                "Build financial projections and a budget for {s}",
                &["forecast"],
                &["metrics"],
            ),
        ],
    ),
];

const SOFTWARE: &[Step] = &[
    phase(
        "specify",
        K::Specify,
        "Specify {s}",
        &[],
        &[
            leaf(
                "requirements",
                K::Specify,
                "Write requirements and user stories for {s}",
                &["requirements"],
                &[],
            ),
            leaf(
                "acceptance",
                K::Specify,
                "Define acceptance criteria and non-functional targets for {s}",
                &["requirements"],
                &["requirements"],
            ),
        ],
    ),
    phase(
        "design",
        K::Design,
        "Design {s}",
        &["specify"],
        &[
            leaf(
                "architecture",
                K::Design,
                "Design the architecture, components and data model of {s}",
                &["architecture"],
                &[],
            ),
            leaf(
                "ux",
                K::Frontend,
                "Design the user interface and main flows of {s}",
                &["ui"],
                &[],
            ),
        ],
    ),
    phase(
        "build",
        K::Implement,
        "Build {s}",
        &["design"],
        &[
            leaf(
                "backend",
                K::Backend,
                "Implement the backend services and APIs of {s}",
                &["api"],
                &[],
            ),
            leaf(
                "frontend",
                K::Frontend,
                "Implement the user interface of {s}",
                &["ui"],
                &[],
            ),
            leaf(
                "integration",
                K::Implement,
                "Integrate the components of {s} end to end",
                &["coding"],
                &["backend", "frontend"],
            ),
        ],
    ),
    phase(
        "verify",
        K::Test,
        "Verify {s}",
        &["build"],
        &[
            leaf(
                "tests",
                K::Test,
                "Write and run unit, integration and end-to-end tests for {s}",
                &["testing"],
                &[],
            ),
            leaf(
                "security",
                K::Security,
                "Review the security of {s}",
                &["security review"],
                &[],
            ),
        ],
    ),
    phase(
        "release",
        K::Deploy,
        "Release {s}",
        &["verify"],
        &[
            leaf("deploy", K::Deploy, "Deploy {s} to {env}", &["ci/cd"], &[]),
            leaf(
                "monitoring",
                K::Monitor,
                "Set up monitoring and alerts for {s}",
                &["observability"],
                &["deploy"],
            ),
            leaf(
                "docs",
                K::Document,
                "Write user and operator documentation for {s}",
                &["summarise"],
                &[],
            ),
        ],
    ),
];

const MARKETING: &[Step] = &[
    phase(
        "research",
        K::Research,
        "Understand the audience for {s}",
        &[],
        &[
            leaf(
                "audience",
                K::Research,
                "Research the target audience and competitors for {s}",
                &["market research"],
                &[],
            ),
            leaf(
                "positioning",
                K::Marketing,
                "Define positioning, messaging and goals for {s}",
                &["content"],
                &["audience"],
            ),
        ],
    ),
    phase(
        "plan",
        K::Marketing,
        "Plan {s}",
        &["research"],
        &[
            leaf(
                "channels",
                K::Marketing,
                "Choose channels, timeline and targeting for {s}",
                &["campaign"],
                &[],
            ),
            leaf(
                "budget",
                K::Finance,
                "Set the budget and expected return for {s}",
                &["budget"],
                &[],
            ),
        ],
    ),
    phase(
        "create",
        K::Marketing,
        "Create the assets for {s}",
        &["plan"],
        &[
            leaf(
                "content",
                K::Marketing,
                "Write copy and create visuals and a landing page for {s}",
                &["copywriting"],
                &[],
            ),
            leaf(
                "review",
                K::Marketing,
                "Review the assets for {s} for brand fit and compliance",
                &["brand"],
                &["content"],
            ),
        ],
    ),
    phase(
        "launch",
        K::Marketing,
        "Run {s}",
        &["create"],
        &[
            leaf(
                "tracking",
                K::Analyze,
                "Set up conversion tracking and KPIs for {s}",
                &["analytics"],
                &[],
            ),
            leaf(
                "go_live",
                K::Marketing,
                "Launch {s} across the chosen channels",
                &["campaign"],
                &["tracking"],
            ),
        ],
    ),
];

const ANALYSIS: &[Step] = &[
    phase(
        "prepare",
        K::Analyze,
        "Prepare the data on {s}",
        &[],
        &[
            leaf(
                "questions",
                K::Specify,
                "Define the questions and success metrics for analysing {s}",
                &["requirements"],
                &[],
            ),
            leaf(
                "collect",
                K::Analyze,
                "Collect the data needed for analysing {s}",
                &["data analysis"],
                &["questions"],
            ),
            leaf(
                "clean",
                K::Analyze,
                "Clean and validate the data on {s}",
                &["data analysis"],
                &["collect"],
            ),
        ],
    ),
    phase(
        "analyse",
        K::Analyze,
        "Analyse {s}",
        &["prepare"],
        &[
            leaf(
                "explore",
                K::Analyze,
                "Explore trends, segments and outliers in {s}",
                &["statistics"],
                &[],
            ),
            leaf(
                "model",
                K::Analyze,
                "Quantify drivers and test hypotheses about {s}",
                &["statistics"],
                &["explore"],
            ),
        ],
    ),
    phase(
        "report",
        K::Document,
        "Report the findings on {s}",
        &["analyse"],
        &[
            leaf(
                "visualise",
                K::Analyze,
                "Build charts and a dashboard of {s}",
                &["reporting"],
                &[],
            ),
            leaf(
                "insights",
                K::Document,
                "Write up insights and recommendations from {s}",
                &["reporting"],
                &["visualise"],
            ),
        ],
    ),
];

const RESEARCH: &[Step] = &[
    phase(
        "scope",
        K::Research,
        "Scope the research on {s}",
        &[],
        &[leaf(
            "questions",
            K::Specify,
            "Define the research questions and scope for {s}",
            &["requirements"],
            &[],
        )],
    ),
    phase(
        "gather",
        K::Research,
        "Gather evidence on {s}",
        &["scope"],
        &[
            leaf(
                "sources",
                K::Research,
                "Find and review sources on {s}",
                &["literature review"],
                &[],
            ),
            leaf(
                "evidence",
                K::Research,
                "Collect data and examples on {s}",
                &["research"],
                &[],
            ),
        ],
    ),
    phase(
        "synthesise",
        K::Analyze,
        "Synthesise the findings on {s}",
        &["gather"],
        &[leaf(
            "compare",
            K::Analyze,
            "Compare and synthesise the findings on {s}",
            &["data analysis"],
            &[],
        )],
    ),
    phase(
        "write",
        K::Document,
        "Write the report on {s}",
        &["synthesise"],
        &[
            leaf(
                "draft",
                K::Document,
                "Draft the report on {s}",
                &["summarise"],
                &[],
            ),
            leaf(
                "review",
                K::Research,
                "Fact-check and review the report on {s}",
                &["research"],
                &["draft"],
            ),
        ],
    ),
];

const OPS: &[Step] = &[
    phase(
        "plan",
        K::Deploy,
        "Plan {s}",
        &[],
        &[
            leaf(
                "rollout_plan",
                K::Deploy,
                "Plan the rollout and the rollback of {s}",
                &["release"],
                &[],
            ),
            leaf(
                "risks",
                K::Security,
                "Review security and compliance risks of {s}",
                &["security review"],
                &[],
            ),
        ],
    ),
    phase(
        "prepare",
        K::Deploy,
        "Prepare the infrastructure for {s}",
        &["plan"],
        &[
            leaf(
                "infrastructure",
                K::Deploy,
                "Provision and configure the infrastructure for {s}",
                &["infrastructure"],
                &[],
            ),
            leaf(
                "pipeline",
                K::Deploy,
                "Set up the CI/CD pipeline for {s}",
                &["ci/cd"],
                &[],
            ),
        ],
    ),
    phase(
        "release",
        K::Deploy,
        "Carry out {s}",
        &["prepare"],
        &[
            leaf(
                "staging",
                K::Test,
                "Rehearse {s} in a test environment and smoke-test it",
                &["testing"],
                &[],
            ),
            leaf(
                "production",
                K::Deploy,
                "Roll out {s} to {env} progressively",
                &["release"],
                &["staging"],
            ),
        ],
    ),
    phase(
        "operate",
        K::Monitor,
        "Operate {s} after the release",
        &["release"],
        &[
            leaf(
                "monitoring",
                K::Monitor,
                "Set up monitoring, alerts and dashboards for {s}",
                &["observability"],
                &[],
            ),
            leaf(
                "runbook",
                K::Document,
                "Write the runbook for {s}",
                &["summarise"],
                &[],
            ),
        ],
    ),
];

const BUG: &[Step] = &[
    phase(
        "investigate",
        K::Test,
        "Investigate the problem ({s})",
        &[],
        &[
            leaf(
                "reproduce",
                K::Test,
                "Reproduce the problem ({s}) with a failing test",
                &["testing"],
                &[],
            ),
            leaf(
                "diagnose",
                K::Implement,
                "Find the root cause of the problem ({s})",
                &["bug fixing"],
                &["reproduce"],
            ),
        ],
    ),
    phase(
        "fix",
        K::Implement,
        "Fix the problem ({s})",
        &["investigate"],
        &[
            leaf(
                "patch",
                K::Implement,
                "Implement the fix ({s})",
                &["bug fixing"],
                &[],
            ),
            leaf(
                "regression",
                K::Test,
                "Add regression tests for the fix ({s})",
                &["testing"],
                &["patch"],
            ),
        ],
    ),
    phase(
        "ship",
        K::Deploy,
        "Ship the fix ({s})",
        &["fix"],
        &[
            leaf("deploy", K::Deploy, "Deploy the fix ({s})", &["ci/cd"], &[]),
            leaf(
                "verify",
                K::Monitor,
                "Verify in {env} that the problem is resolved ({s})",
                &["observability"],
                &["deploy"],
            ),
        ],
    ),
];

const INCIDENT: &[Step] = &[
    phase(
        "respond",
        K::Monitor,
        "Restore the service ({s})",
        &[],
        &[
            leaf(
                "triage",
                K::Monitor,
                "Triage the incident ({s}): confirm the impact and find what changed",
                &["incident response"],
                &[],
            ),
            leaf(
                "mitigate",
                K::Deploy,
                "Roll back the suspect change or ship a hotfix ({s})",
                &["release"],
                &["triage"],
            ),
            leaf(
                "communicate",
                K::Support,
                "Keep affected customers and stakeholders informed ({s})",
                &["customer support"],
                &["triage"],
            ),
            leaf(
                "verify",
                K::Monitor,
                "Verify in {env} that the service has recovered ({s})",
                &["observability"],
                &["mitigate"],
            ),
        ],
    ),
    phase(
        "follow_up",
        K::Document,
        "Follow up on the incident ({s})",
        &["respond"],
        &[
            leaf(
                "root_cause",
                K::Implement,
                "Fix the root cause and add a regression test ({s})",
                &["bug fixing"],
                &[],
            ),
            leaf(
                "postmortem",
                K::Document,
                "Write the postmortem: timeline, root cause and follow-up actions ({s})",
                &["summarise"],
                &[],
            ),
        ],
    ),
];

/// Words that start a new action when they follow `and` or a comma.
const ACTION_VERBS: &[&str] = &[
    "add",
    "analyse",
    "analyze",
    "audit",
    "brief",
    "build",
    "check",
    "collect",
    "compare",
    "create",
    "debug",
    "deploy",
    "design",
    "develop",
    "document",
    "draft",
    "estimate",
    "evaluate",
    "find",
    "fix",
    "forecast",
    "hire",
    "implement",
    "improve",
    "integrate",
    "investigate",
    "launch",
    "make",
    "measure",
    "migrate",
    "model",
    "monitor",
    "notify",
    "optimise",
    "optimize",
    "plan",
    "prepare",
    "price",
    "propose",
    "publish",
    "refactor",
    "release",
    "report",
    "research",
    "review",
    "rotate",
    "run",
    "scale",
    "secure",
    "send",
    "set",
    "ship",
    "study",
    "summarise",
    "summarize",
    "survey",
    "test",
    "track",
    "train",
    "translate",
    "update",
    "write",
];

/// Words dropped from the start of a clause before it is used as a subject.
const LEADING_FILLER: &[&str] = &[
    "please",
    "and",
    "then",
    "also",
    "finally",
    "first",
    "next",
    "afterwards",
    "after",
    "that",
    "i",
    "we",
    "you",
    "want",
    "need",
    "would",
    "like",
    "to",
    "can",
    "could",
    "help",
    "me",
    "us",
    "let's",
    "lets",
    "should",
    "must",
    "will",
];

/// Kind hints, for clauses that match no family: (word or stem, is a stem, kind,
/// weight). Every hint in a clause adds its weight to its kind and the heaviest kind
/// wins (ties: the earlier hint). Nouns that name the work outweigh generic verbs
/// ("write", "build", "improve"), so "write unit tests" is a test; a specific verb
/// heading the clause ("Document …", "Test …") counts [`HEAD_HINT_BONUS`] more.
const KIND_HINTS: &[(&str, bool, TaskKind, f32)] = &[
    ("test", true, K::Test, 2.0),
    ("qa", false, K::Test, 2.0),
    ("coverage", false, K::Test, 1.5),
    ("deploy", true, K::Deploy, 2.0),
    ("release", false, K::Deploy, 1.5),
    ("rollout", false, K::Deploy, 1.5),
    ("ship", false, K::Deploy, 1.5),
    ("monitor", true, K::Monitor, 2.0),
    ("alert", true, K::Monitor, 2.0),
    ("latency", false, K::Monitor, 1.0),
    ("secur", true, K::Security, 2.0),
    ("audit", true, K::Security, 2.0),
    ("vulnerab", true, K::Security, 2.0),
    ("credential", true, K::Security, 2.0),
    ("password", true, K::Security, 1.5),
    ("research", true, K::Research, 2.0),
    ("investigat", true, K::Research, 1.5),
    ("analy", true, K::Analyze, 2.0),
    ("metric", true, K::Analyze, 2.0),
    ("dashboard", true, K::Analyze, 1.5),
    ("market", true, K::Marketing, 2.0),
    ("campaign", true, K::Marketing, 2.0),
    ("blog", true, K::Marketing, 2.0),
    ("announcement", true, K::Marketing, 2.0),
    ("newsletter", true, K::Marketing, 2.0),
    ("press", false, K::Marketing, 1.0),
    ("email", true, K::Marketing, 1.0),
    ("sell", true, K::Sales, 2.0),
    ("sales", false, K::Sales, 2.0),
    ("leads", false, K::Sales, 2.0),
    ("outreach", false, K::Sales, 2.0),
    ("deck", false, K::Sales, 1.0),
    ("customer", true, K::Support, 1.0),
    ("support", false, K::Support, 1.5),
    ("ticket", true, K::Support, 1.5),
    ("notify", false, K::Support, 1.5),
    ("price", true, K::Finance, 2.0),
    ("pricing", false, K::Finance, 2.0),
    ("budget", true, K::Finance, 2.0),
    ("invoice", true, K::Finance, 1.0),
    ("cost", true, K::Finance, 2.0),
    ("estimate", false, K::Finance, 1.0),
    ("forecast", true, K::Finance, 1.0),
    ("revenue", false, K::Finance, 1.0),
    ("design", true, K::Design, 2.0),
    ("architect", true, K::Design, 2.0),
    ("ui", false, K::Frontend, 2.0),
    ("frontend", false, K::Frontend, 2.0),
    ("css", false, K::Frontend, 2.0),
    ("page", true, K::Frontend, 1.5),
    ("screen", false, K::Frontend, 1.5),
    ("button", true, K::Frontend, 1.5),
    ("form", false, K::Frontend, 1.0),
    ("admin", false, K::Frontend, 1.0),
    ("api", false, K::Backend, 2.0),
    ("database", true, K::Backend, 2.0),
    ("backend", false, K::Backend, 2.0),
    ("endpoint", true, K::Backend, 2.0),
    ("queries", false, K::Backend, 1.0),
    ("store", false, K::Backend, 1.0),
    ("requirement", true, K::Specify, 2.0),
    ("spec", true, K::Specify, 2.0),
    ("document", true, K::Document, 1.5),
    ("docs", false, K::Document, 2.0),
    ("readme", false, K::Document, 2.0),
    ("runbook", true, K::Document, 2.0),
    ("policy", false, K::Document, 2.5),
    ("write", false, K::Document, 1.0),
    ("report", false, K::Document, 1.0),
    ("summar", true, K::Document, 1.5),
    ("translat", true, K::Document, 1.5),
    // Optimize is Genesis improving itself: only words about that mean it. Improving
    // or optimising anything else is ordinary work on that thing.
    ("self-improv", true, K::Optimize, 3.0),
    ("genesis", false, K::Optimize, 2.0),
    ("evolv", true, K::Optimize, 1.5),
    // The agents' own machinery: their prompts, the routing between them, their
    // benchmarks (verification V9: "Optimise the routing of our agents" and darwin's own
    // examples had become implement tasks).
    ("prompt", true, K::Optimize, 1.5),
    ("routing", false, K::Optimize, 1.0),
    ("benchmark", true, K::Optimize, 2.0),
    ("improve", true, K::Implement, 0.5),
    ("optimi", true, K::Implement, 0.5),
    ("build", false, K::Implement, 1.0),
    ("implement", true, K::Implement, 1.5),
    ("code", false, K::Implement, 1.5),
    ("develop", true, K::Implement, 1.5),
    ("refactor", true, K::Implement, 2.0),
    ("pipeline", false, K::Implement, 1.0),
    ("déplo", true, K::Deploy, 2.0),
    ("desplieg", true, K::Deploy, 2.0),
    ("fix", false, K::Implement, 1.0),
    // Hiring is nobody's kind of work here: it must not read as back-end work.
    ("hire", false, K::Generic, 3.0),
    ("recruit", true, K::Generic, 3.0),
];

/// Kinds of work that are one phase of a family's project: a clause whose hints weigh
/// in for one of them asks for that phase only, not for a family's whole template.
const PHASE_KINDS: &[TaskKind] = &[K::Test, K::Design, K::Specify, K::Document, K::Security];

/// Extra weight of a hint of weight 1.5 or more that heads its clause.
const HEAD_HINT_BONUS: f32 = 1.0;

/// Verbs that, heading a clause, name the kind of work asked for: a family whose
/// template has no step of that kind is not what the clause asks for ("estimate the
/// hosting cost on AWS" is finance work, not a deployment).
const VERB_KINDS: &[(&str, TaskKind)] = &[
    ("estimate", K::Finance),
    ("budget", K::Finance),
    ("price", K::Finance),
    ("hire", K::Generic),
    ("recruit", K::Generic),
    ("interview", K::Generic),
    ("translate", K::Document),
    ("write", K::Document),
];

/// Verbs that make a sentence an ask when they start it, beyond [`ACTION_VERBS`].
const MORE_IMPERATIVES: &[&str] = &[
    "allow",
    "archive",
    "automate",
    "benchmark",
    "book",
    "brief",
    "calculate",
    "call",
    "cancel",
    "change",
    "choose",
    "clean",
    "configure",
    "connect",
    "convert",
    "correct",
    "define",
    "delete",
    "describe",
    "disable",
    "draw",
    "email",
    "enable",
    "encrypt",
    "ensure",
    "explain",
    "export",
    "extract",
    "generate",
    "get",
    "give",
    "hash",
    "identify",
    "import",
    "increase",
    "install",
    "introduce",
    "keep",
    "list",
    "localise",
    "localize",
    "merge",
    "model",
    "move",
    "notify",
    "organise",
    "organize",
    "outline",
    "patch",
    "present",
    "prioritise",
    "prioritize",
    "propose",
    "provide",
    "provision",
    "reduce",
    "remove",
    "rename",
    "replace",
    "reset",
    "restore",
    "revoke",
    "rewrite",
    "roll",
    "rotate",
    "save",
    "schedule",
    "show",
    "simplify",
    "speed",
    "start",
    "stop",
    "store",
    "tell",
    "translate",
    "tune",
    "upgrade",
    "use",
    "validate",
    "verify",
];

/// Imperative verbs of other languages that start a new clause after `und`/`et`/`y`
/// (German, French, Spanish), and are dropped from a subject like English verbs.
const FOREIGN_VERBS: &[&str] = &[
    "analysiere",
    "baue",
    "behebe",
    "entwickle",
    "erstelle",
    "plane",
    "prüfe",
    "schreibe",
    "starte",
    "teste",
    "veröffentliche",
    "analyse",
    "corrige",
    "crée",
    "déploie",
    "écris",
    "lance",
    "analiza",
    "crea",
    "despliega",
    "escribe",
    "lanza",
];

/// Words that ask for something wherever they stand in a sentence.
const REQUEST_MARKERS: &[&str] = &[
    "need", "needs", "must", "should", "want", "wants", "please", "let's", "lets",
];

/// Words that carry no subject of their own: a determiner, a preposition, or a name for
/// the kind of work ("tests", "docs", "it"). A follow-up made only of these and the
/// earlier clause's subject adds nothing new to the earlier clause's plan.
const NOTHING_NEW: &[&str] = &[
    "a",
    "again",
    "all",
    "an",
    "and",
    "automated",
    "change",
    "changes",
    "code",
    "deploy",
    "deployment",
    "docs",
    "documentation",
    "e2e",
    "end-to-end",
    "everything",
    "fix",
    "fixes",
    "for",
    "in",
    "integration",
    "it",
    "its",
    "monitoring",
    "of",
    "on",
    "our",
    "le",
    "la",
    "correctif",
    "prod",
    "production",
    "properly",
    "regression",
    "report",
    "reports",
    "summary",
    "release",
    "result",
    "results",
    "smoke",
    "some",
    "staging",
    "test",
    "tests",
    "that",
    "the",
    "their",
    "them",
    "these",
    "this",
    "those",
    "to",
    "unit",
    "with",
    "work",
];

/// Deployment targets a clause can name ("… to staging"), as written in task texts.
const TARGETS: &[(&str, &str)] = &[
    ("staging", "staging"),
    ("production", "production"),
    ("prod", "production"),
    ("preview", "preview"),
    ("sandbox", "sandbox"),
    ("uat", "UAT"),
];

/// Words that do not count as a clause's content when looking for what heads it.
fn is_stopword(word: &str) -> bool {
    matches!(
        word,
        "the"
            | "a"
            | "an"
            | "our"
            | "my"
            | "your"
            | "their"
            | "its"
            | "this"
            | "that"
            | "these"
            | "those"
            | "of"
            | "for"
            | "to"
            | "in"
            | "on"
            | "at"
            | "with"
            | "and"
            | "or"
            | "we"
            | "i"
            | "you"
            | "please"
            | "new"
            | "some"
            | "all"
            | "ein"
            | "eine"
            | "einen"
            | "der"
            | "die"
            | "das"
            | "den"
            | "le"
            | "la"
            | "les"
            | "un"
            | "une"
            | "de"
            | "du"
            | "des"
            | "el"
            | "los"
            | "las"
            | "una"
    )
}

/// Estimated tokens for a task of a kind (leaf tasks); composite tasks integrate and
/// review their subtasks' results and cost less.
fn estimated_tokens(kind: TaskKind, composite: bool) -> u32 {
    if composite {
        return 800;
    }
    match kind {
        K::Implement | K::Backend | K::Frontend => 6_000,
        K::Design | K::Security | K::Marketing => 2_500,
        K::Test | K::Analyze | K::Research | K::Document => 3_000,
        K::Deploy | K::Finance => 2_000,
        K::Specify | K::Monitor | K::Sales | K::Support => 1_500,
        K::Optimize => 4_000,
        K::Generic => 1_000,
    }
}

/// How deep templates are expanded; lowered when a request would exceed the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expansion {
    /// One task per clause.
    Flat,
    /// Template phases without their subtasks.
    Phases,
    /// Phases and subtasks.
    Full,
}

/// A clause of the request and what it was recognised as.
#[derive(Debug)]
struct Clause {
    text: String,
    subject: String,
    family: Option<Family>,
    kind: TaskKind,
    /// The deployment target it names ("staging"), if any.
    target: Option<&'static str>,
    /// Whether a sequencing word ("then") introduced it.
    sequenced: bool,
    /// Later clauses folded into this one's template (see [`folds_into`]): the kind of
    /// the phase each asks for again, and its text.
    also: Vec<(TaskKind, String)>,
}

impl Clause {
    /// Whether the clause's work continues the one before it ("analyse **the
    /// results**", "send **them** an email").
    fn refers_back(&self) -> bool {
        let subject = self.subject.to_lowercase();
        let first =
            words(&subject).find(|w| !matches!(*w, "the" | "our" | "your" | "my" | "their"));
        first.is_some_and(|w| BACK_REFERENCES.contains(&w))
            || words(&self.text.to_lowercase())
                .any(|w| matches!(w, "it" | "them" | "they" | "these" | "those"))
    }

    /// Whether the clause is work that follows what was built before it: testing,
    /// shipping, watching or documenting it.
    fn follows_on(&self) -> bool {
        let lower = self.text.to_lowercase();
        // Fixing what an audit, review or investigation before it found; reviewing or
        // checking what was built or shipped before it (G10 M7: "…, then implement a
        // client and review the code" ran the review first, without the code).
        if head_verb(&lower).is_some_and(|v| {
            matches!(
                v,
                "fix"
                    | "address"
                    | "resolve"
                    | "review"
                    | "check"
                    | "verify"
                    | "validate"
                    | "proofread"
                    | "inspect"
            )
        }) {
            return true;
        }
        match self.family {
            Some(f) => f == Family::DeploymentOps,
            None => matches!(self.kind, K::Test | K::Deploy | K::Monitor | K::Document),
        }
    }
}

/// Words a follow-up clause's subject starts with when it means the earlier clause's
/// work ("deploy **the fix**", "test **it**").
const BACK_REFERENCES: &[&str] = &[
    "it", "them", "this", "that", "these", "those", "fix", "fixes", "change", "changes", "patch",
    "update", "updates", "result", "results", "work",
];

/// Whether clause `next` only asks again for a phase `prev`'s template already has,
/// about the same work: `prev` has a family, a top-level step of its template has the
/// kind `next` asks for (its family's kind, or its own kind when it has no family), and
/// `next` adds nothing new — its subject refers back ("Fix the crash on login, then
/// deploy the fix"; "… and launch a marketing campaign for it") or is made only of
/// `prev`'s subject and words that name the work ("…, then write unit tests"). Such a
/// clause is folded into that phase instead of expanding a second template or a second
/// task (which would plan the work twice). Returns the phase's kind.
fn folds_into(prev: &Clause, next: &Clause) -> Option<TaskKind> {
    let pf = prev.family?;
    if next.family == Some(pf) {
        return None;
    }
    let kind = next.family.map_or(next.kind, Family::kind);
    if !pf.template().iter().any(|s| s.kind == kind) {
        return None;
    }
    let subject = next.subject.to_lowercase();
    let prev_subject = prev.subject.to_lowercase();
    let mut rest =
        words(&subject).skip_while(|w| matches!(*w, "the" | "our" | "your" | "my" | "their"));
    let last = words(&subject).last();
    let refers_back = subject == prev_subject
        || rest.next().is_some_and(|w| BACK_REFERENCES.contains(&w))
        || last.is_some_and(|w| matches!(w, "it" | "them" | "this" | "that"));
    let nothing_new =
        words(&subject).all(|w| NOTHING_NEW.contains(&w) || words(&prev_subject).any(|p| p == w));
    (refers_back || nothing_new).then_some(kind)
}

/// The LLM-free decomposer. Stateless and cheap: construct it once and share it.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeuristicDecomposer;

impl HeuristicDecomposer {
    /// A decomposer.
    pub fn new() -> Self {
        HeuristicDecomposer
    }

    /// Decomposes `request` synchronously (it never waits on anything).
    ///
    /// # Errors
    /// [`HtdagError::EmptyRequest`] / [`HtdagError::RequestTooLong`] for requests that
    /// break the limits.
    pub fn decompose_sync(&self, request: &str, limits: &Limits) -> Result<TaskDag, HtdagError> {
        limits.check_request(request)?;
        let reading = read_request(request);
        let report = reading.report;
        let classified: Vec<Clause> = if reading.asks.is_empty() {
            vec![classify(request.trim(), report, false)]
        } else {
            reading
                .asks
                .iter()
                .map(|(text, sequenced)| classify(text, report, *sequenced))
                .collect()
        };
        // A follow-up that asks again for a phase an earlier clause's template has
        // joins that phase; a clause repeated word for word is planned once.
        let mut clauses: Vec<Clause> = Vec::with_capacity(classified.len());
        for clause in classified {
            if clauses
                .iter()
                .any(|c| c.text.eq_ignore_ascii_case(&clause.text))
            {
                continue;
            }
            if let Some(prev) = clauses.iter_mut().rev().find(|c| c.family.is_some())
                && let Some(kind) = folds_into(prev, &clause)
            {
                if prev.target.is_none() {
                    prev.target = clause.target;
                }
                prev.also.push((kind, clause.text));
                continue;
            }
            clauses.push(clause);
        }
        let context = (!reading.context.is_empty()).then(|| reading.context.join(" "));
        let compound = clauses.len() > 1;
        let mut expansion = Expansion::Full;
        loop {
            let (count, depth) = size_of(&clauses, compound, expansion);
            if (count <= limits.max_tasks && depth <= limits.max_depth)
                || expansion == Expansion::Flat
            {
                break;
            }
            expansion = match expansion {
                Expansion::Full => Expansion::Phases,
                _ => Expansion::Flat,
            };
        }
        // One clause of a known family: the template's structure (ids, kinds, skills,
        // metadata, edges, topological order) was built once; only the descriptions
        // carry the subject (and the target).
        if !compound
            && expansion > Expansion::Flat
            && context.is_none()
            && let [clause] = clauses.as_slice()
            && clause.also.is_empty()
            && let Some(family) = clause.family
            && let Some(prebuilt) = prebuilt(family, expansion)
        {
            let mut dag = prebuilt.dag.clone();
            dag.set_limits(limits.clone());
            let target = clause.target.unwrap_or(DEFAULT_TARGET);
            dag.rewrite_descriptions(|position, description| {
                if let Some(text) = prebuilt.texts.get(position) {
                    *description = fill(text, &clause.subject, target);
                }
            });
            return Ok(dag);
        }
        let mut dag = TaskDag::new(limits.clone());
        dag.reserve(size_of(&clauses, compound, expansion).0);
        let mut b = Builder {
            dag: &mut dag,
            context: context.as_deref(),
        };
        // Clauses past the task limit are folded into the last task that fits.
        let clause_limit = limits.max_tasks.max(1);
        let (kept, folded) = clauses.split_at(clauses.len().min(clause_limit));
        let mut tops: Vec<TaskId> = Vec::with_capacity(kept.len());
        // The last clause that follows on from the work before it.
        let mut last_follow_on = 0usize;
        for (i, clause) in kept.iter().enumerate() {
            let id = TaskId::new(format!("t{}", i + 1));
            let is_last = i + 1 == kept.len();
            let extra: Vec<&str> = if is_last {
                folded.iter().map(|c| c.text.as_str()).collect()
            } else {
                Vec::new()
            };
            let top = match clause.family {
                Some(family) if !compound && expansion > Expansion::Flat => {
                    b.template(family, clause, None, "t", expansion)?;
                    continue;
                }
                Some(family) if expansion > Expansion::Flat => {
                    let top =
                        b.clause_task(&id, clause, family.kind(), &extra, Some(family), true)?;
                    b.template(family, clause, Some(&top), id.as_str(), expansion)?;
                    top
                }
                _ => b.clause_task(&id, clause, clause.kind, &extra, clause.family, false)?,
            };
            // What it waits for: the work since the last follow-on clause when it
            // follows on; the clause before it when it is sequenced or refers back;
            // nothing otherwise.
            if i > 0 {
                let waits_for: &[TaskId] = if clause.follows_on() {
                    &tops[last_follow_on..]
                } else if clause.sequenced || clause.refers_back() {
                    &tops[i - 1..]
                } else {
                    &[]
                };
                for prev in waits_for {
                    b.dag.add_dependency(prev, &top)?;
                }
            }
            if clause.follows_on() {
                last_follow_on = i;
            }
            tops.push(top);
        }
        if dag.is_empty() {
            return Err(HtdagError::EmptyDecomposition {
                decomposer: "heuristic".into(),
            });
        }
        Ok(dag)
    }

    /// The family a request (or clause) belongs to, if any, with its score. A request
    /// with no ask in it is read as a report (see the module docs).
    pub fn classify(&self, text: &str) -> Option<(Family, f32)> {
        let report = !split_sentences(text).iter().any(|s| is_ask(s));
        family_with_evidence(&text.to_lowercase(), report)
    }
}

/// The target templates deploy to when a request names none.
const DEFAULT_TARGET: &str = "production";

/// A request read into asks and context.
#[derive(Debug, Default)]
struct Reading {
    /// The clauses to plan, each with whether a sequencing word introduced it.
    asks: Vec<(String, bool)>,
    /// Statements that accompany asks: context for the plan, not tasks.
    context: Vec<String>,
    /// No sentence asks for anything: the statements are the asks (a problem report).
    report: bool,
}

/// Reads a request: sentences into asks and statements, asks into clauses.
fn read_request(request: &str) -> Reading {
    let sentences = split_sentences(request);
    let asks: Vec<bool> = sentences.iter().map(|s| is_ask(s)).collect();
    let report = !asks.iter().any(|a| *a);
    let mut reading = Reading {
        report,
        ..Reading::default()
    };
    let mut pieces: Vec<(String, bool)> = Vec::new();
    for (sentence, ask) in sentences.iter().zip(&asks) {
        if *ask || report {
            split_sentence(sentence, &mut pieces);
        } else {
            reading.context.push(ensure_period(sentence));
        }
    }
    reading.asks = merge_fragments(pieces);
    reading
}

/// A sentence with a full stop, for joining sentences into context.
fn ensure_period(sentence: &str) -> String {
    let mut s = sentence.trim().to_owned();
    if !s.ends_with(['.', '!', '?', ':']) {
        s.push('.');
    }
    s
}

/// Whether a sentence asks for something: it starts (after polite filler) with an
/// imperative verb, or has a request marker, or is a question.
fn is_ask(sentence: &str) -> bool {
    if sentence.trim_end().ends_with('?') {
        return true;
    }
    let lower = sentence.to_lowercase();
    let first = words(&lower).find(|w| {
        !matches!(
            *w,
            "please"
                | "kindly"
                | "also"
                | "now"
                | "then"
                | "finally"
                | "first"
                | "next"
                | "and"
                | "just"
                | "afterwards"
                | "lastly"
        )
    });
    let Some(first) = first else {
        return false;
    };
    if ACTION_VERBS.contains(&first) || MORE_IMPERATIVES.contains(&first) {
        return true;
    }
    let mut prev = first;
    for w in words(&lower) {
        if REQUEST_MARKERS.contains(&w)
            || (prev == "would" && w == "like")
            || (matches!(prev, "can" | "could") && w == "you")
            || (matches!(prev, "have" | "has") && w == "to")
        {
            return true;
        }
        prev = w;
    }
    false
}

/// A family template instantiated once, with empty descriptions: cloning it and filling
/// in the descriptions gives exactly what [`Builder::template`] would build (no id
/// formatting, cycle checks or index inserts per request).
struct Prebuilt {
    dag: TaskDag,
    /// Each task's template text, by insertion position.
    texts: Vec<&'static str>,
}

/// Every family at the two template expansions, built on first use.
static PREBUILT: std::sync::LazyLock<Vec<Option<Prebuilt>>> = std::sync::LazyLock::new(|| {
    let mut out = Vec::with_capacity(Family::ALL.len() * 2);
    for family in Family::ALL {
        for expansion in [Expansion::Phases, Expansion::Full] {
            out.push(build_prebuilt(family, expansion));
        }
    }
    out
});

fn prebuilt(family: Family, expansion: Expansion) -> Option<&'static Prebuilt> {
    let f = Family::ALL.iter().position(|x| *x == family)?;
    let e = match expansion {
        Expansion::Flat => return None,
        Expansion::Phases => 0,
        Expansion::Full => 1,
    };
    PREBUILT.get(f * 2 + e)?.as_ref()
}

fn build_prebuilt(family: Family, expansion: Expansion) -> Option<Prebuilt> {
    // Built under limits wide enough for any template; the caller's limits are set on
    // each copy, after the expansion was chosen to fit them.
    let wide = Limits {
        max_request_chars: usize::MAX,
        max_depth: usize::MAX,
        max_tasks: usize::MAX,
        ..Limits::default()
    };
    let mut dag = TaskDag::new(wide);
    let blank = Clause {
        text: String::new(),
        subject: String::new(),
        family: Some(family),
        kind: family.kind(),
        target: None,
        sequenced: false,
        also: Vec::new(),
    };
    Builder {
        dag: &mut dag,
        context: None,
    }
    .template(family, &blank, None, "t", expansion)
    .ok()?;
    // The insertion order of Builder::template.
    let mut texts = Vec::with_capacity(dag.len());
    for step in family.template() {
        texts.push(step.text);
        if expansion == Expansion::Full {
            texts.extend(step.children.iter().map(|c| c.text));
        }
    }
    if texts.len() != dag.len() {
        return None;
    }
    dag.rewrite_descriptions(|_, description| *description = String::new());
    // Computes and caches the topological order, which every copy then shares.
    dag.topological_order();
    Some(Prebuilt { dag, texts })
}

struct Builder<'a> {
    dag: &'a mut TaskDag,
    /// The request's statements, recorded on every top-level task.
    context: Option<&'a str>,
}

impl Builder<'_> {
    fn clause_task(
        &mut self,
        id: &TaskId,
        clause: &Clause,
        kind: TaskKind,
        extra: &[&str],
        family: Option<Family>,
        composite: bool,
    ) -> Result<TaskId, HtdagError> {
        let mut description = clause.text.clone();
        for e in extra {
            description.push_str("; ");
            description.push_str(e);
        }
        let mut task = Task::new(id.clone(), kind, description)
            .with_estimated_tokens(estimated_tokens(kind, composite));
        if let Some(f) = family {
            task = task.with_metadata("family", f.as_str());
        }
        if let Some(context) = self.context {
            task = task.with_metadata("context", context.to_owned());
        }
        self.dag.add_task(task, None)?;
        Ok(id.clone())
    }

    /// Instantiates a family template for `clause` under `parent`, ids prefixed with
    /// `prefix`. The text of a clause folded into it is added to the first top-level
    /// step of its kind; the clause's target replaces the default one.
    fn template(
        &mut self,
        family: Family,
        clause: &Clause,
        parent: Option<&TaskId>,
        prefix: &str,
        expansion: Expansion,
    ) -> Result<(), HtdagError> {
        let subject = clause.subject.as_str();
        let target = clause.target.unwrap_or(DEFAULT_TARGET);
        let steps = family.template();
        let sep = if parent.is_some() { "." } else { "" };
        let ids: Vec<TaskId> = (1..=steps.len())
            .map(|i| numbered_id(prefix, sep, i))
            .collect();
        let mut also: Vec<Vec<&str>> = vec![Vec::new(); steps.len()];
        for (kind, text) in &clause.also {
            if let Some(i) = steps.iter().position(|s| s.kind == *kind) {
                also[i].push(text);
            }
        }
        let fill_in = Fill { subject, target };
        for ((step, id), also) in steps.iter().zip(&ids).zip(&also) {
            let with_children = expansion == Expansion::Full && !step.children.is_empty();
            self.step(step, id, family, fill_in, parent, with_children, also)?;
            if with_children {
                let child_ids: Vec<TaskId> = (1..=step.children.len())
                    .map(|i| numbered_id(id.as_str(), ".", i))
                    .collect();
                for (child, cid) in step.children.iter().zip(&child_ids) {
                    self.step(child, cid, family, fill_in, Some(id), false, &[])?;
                }
                self.deps(step.children, &child_ids)?;
            }
        }
        self.deps(steps, &ids)
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        step: &Step,
        id: &TaskId,
        family: Family,
        fill_in: Fill<'_>,
        parent: Option<&TaskId>,
        composite: bool,
        also: &[&str],
    ) -> Result<(), HtdagError> {
        let mut description = fill(step.text, fill_in.subject, fill_in.target);
        for also in also {
            description.push_str("; ");
            description.push_str(also);
        }
        let mut task = Task::new(id.clone(), step.kind, description)
            .with_estimated_tokens(estimated_tokens(step.kind, composite))
            .with_metadata("family", family.as_str())
            .with_metadata("step", step.key);
        task.required_skills = step.skills.iter().map(|s| (*s).into()).collect();
        if parent.is_none()
            && let Some(context) = self.context
        {
            task = task.with_metadata("context", context.to_owned());
        }
        self.dag.add_task(task, parent)?;
        Ok(())
    }

    fn deps(&mut self, steps: &[Step], ids: &[TaskId]) -> Result<(), HtdagError> {
        for (step, id) in steps.iter().zip(ids) {
            for dep in step.deps {
                if let Some(pos) = steps.iter().position(|s| s.key == *dep) {
                    self.dag.add_dependency(&ids[pos], id)?;
                }
            }
        }
        Ok(())
    }
}

/// `{prefix}{sep}{n}` as a task id. Short ids are assembled on the stack, so the id's
/// own storage is the only allocation.
fn numbered_id(prefix: &str, sep: &str, n: usize) -> TaskId {
    let mut digit_buf = [0u8; 20];
    let digits = genesis_core::decimal::u64_digits(n as u64, &mut digit_buf).as_bytes();
    let mut buf = [0u8; 64];
    let len = prefix.len() + sep.len() + digits.len();
    if len <= buf.len() {
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..prefix.len() + sep.len()].copy_from_slice(sep.as_bytes());
        buf[prefix.len() + sep.len()..len].copy_from_slice(digits);
        if let Ok(id) = std::str::from_utf8(&buf[..len]) {
            return TaskId::new(id);
        }
    }
    TaskId::new(format!("{prefix}{sep}{n}"))
}

/// What a template's slots are filled with.
#[derive(Clone, Copy)]
struct Fill<'a> {
    subject: &'a str,
    target: &'a str,
}

/// A template text with every `{s}` replaced by `subject` and every `{env}` by
/// `target`, in one allocation.
fn fill(text: &str, subject: &str, target: &str) -> String {
    let mut out = String::with_capacity(text.len() + subject.len());
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with("{s}") {
            out.push_str(subject);
            rest = &rest[i + 3..];
        } else if rest[i..].starts_with("{env}") {
            out.push_str(target);
            rest = &rest[i + 5..];
        } else {
            out.push('{');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Tasks and depth a decomposition would produce.
fn size_of(clauses: &[Clause], compound: bool, expansion: Expansion) -> (usize, usize) {
    let mut count = 0;
    let mut depth = 1;
    for c in clauses {
        let base = usize::from(compound);
        match (c.family, expansion) {
            (Some(f), Expansion::Full) => {
                let steps = f.template();
                count += base + steps.len() + steps.iter().map(|s| s.children.len()).sum::<usize>();
                depth = depth.max(base + 2);
            }
            (Some(f), Expansion::Phases) => {
                count += base + f.template().len();
                depth = depth.max(base + 1);
            }
            _ => count += 1,
        }
    }
    (count, depth)
}

/// Reads one clause: its family (see [`family_with_evidence`]), kind, subject and
/// target.
fn classify(text: &str, report: bool, sequenced: bool) -> Clause {
    let lower = text.to_lowercase();
    let family = family_with_evidence(&lower, report).map(|(f, _)| f);
    let kind = family.map_or_else(|| kind_of(&lower), Family::kind);
    let (subject, target) = subject_and_target(text);
    Clause {
        text: text.to_owned(),
        subject,
        family,
        kind,
        target,
        sequenced,
        also: Vec::new(),
    }
}

fn words(lower: &str) -> impl Iterator<Item = &str> {
    lower
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '/' || c == '\''))
        .map(|w| w.trim_matches(|c| c == '-' || c == '/' || c == '\''))
        .filter(|w| !w.is_empty())
}

/// Every family keyword, by its text: (family index, prefix, weight). Built once, so
/// scoring a word costs a few hash lookups instead of a scan of every keyword list.
struct KeywordIndex {
    by_word: genesis_core::fasthash::FxHashMap<&'static str, Vec<(usize, bool, f32)>>,
    /// Shortest and longest prefix keyword, in bytes.
    prefix_lens: std::ops::RangeInclusive<usize>,
    /// Bit `n` set when some prefix keyword is `n` bytes long (n < 64): the only
    /// prefix lengths worth a lookup.
    prefix_len_bits: u64,
}

static KEYWORDS: std::sync::LazyLock<KeywordIndex> = std::sync::LazyLock::new(|| {
    let mut by_word: genesis_core::fasthash::FxHashMap<&'static str, Vec<(usize, bool, f32)>> =
        Default::default();
    let (mut shortest, mut longest) = (usize::MAX, 0);
    let mut prefix_len_bits = 0u64;
    for (i, fam) in Family::ALL.iter().enumerate() {
        for k in fam.keywords() {
            by_word
                .entry(k.word)
                .or_default()
                .push((i, k.prefix, k.weight));
            if k.prefix {
                shortest = shortest.min(k.word.len());
                longest = longest.max(k.word.len());
                // A length past 63 keeps every lookup (all bits set).
                prefix_len_bits |= 1u64.checked_shl(k.word.len() as u32).unwrap_or(u64::MAX);
            }
        }
    }
    KeywordIndex {
        by_word,
        prefix_lens: shortest..=longest,
        prefix_len_bits,
    }
});

/// What a clause's words say about each family.
#[derive(Debug, Default)]
struct Evidence {
    /// Keyword score per family (index into [`Family::ALL`]), phrases included.
    score: [f32; FAMILIES],
    /// Keyword score from single words only.
    word_score: [f32; FAMILIES],
    /// Distinct cue words and phrases per family.
    cues: [u8; FAMILIES],
    /// Whether a strong cue ([`STRONG_CUE`]) of the family is among the clause's first
    /// two content words (it heads the clause: "Deploy …", "Research …").
    heads: [bool; FAMILIES],
}

fn evidence(lower: &str) -> Evidence {
    let index = &*KEYWORDS;
    let mut ev = Evidence::default();
    let mut prev: Option<&str> = None;
    let mut content = 0usize;
    for word in words(lower) {
        // A word counts once per family, at its best keyword: the word itself (a whole
        // word or a stem equal to it), or a stem that is a proper prefix of it.
        let mut best = [0.0f32; FAMILIES];
        let mut take = |entries: &Vec<(usize, bool, f32)>, whole: bool| {
            for &(i, prefix, weight) in entries {
                if (whole || prefix)
                    && let Some(b) = best.get_mut(i)
                {
                    *b = b.max(weight);
                }
            }
        };
        if let Some(entries) = index.by_word.get(word) {
            take(entries, true);
        }
        let longest = (*index.prefix_lens.end()).min(word.len().saturating_sub(1));
        for k in *index.prefix_lens.start()..=longest {
            if k < 64 && index.prefix_len_bits & (1 << k) == 0 {
                continue;
            }
            if let Some(entries) = word.get(..k).and_then(|p| index.by_word.get(p)) {
                take(entries, false);
            }
        }
        let heading = content < 2;
        for (i, b) in best.into_iter().enumerate() {
            if b > 0.0 {
                ev.word_score[i] += b;
                ev.score[i] += b;
                ev.cues[i] = ev.cues[i].saturating_add(1);
                ev.heads[i] |= heading && b >= STRONG_CUE;
            }
        }
        if let Some(p) = prev {
            for (first, second, family, weight) in PHRASES {
                if p == *first
                    && word == *second
                    && let Some(i) = Family::ALL.iter().position(|f| f == family)
                {
                    ev.score[i] += weight;
                    ev.cues[i] = ev.cues[i].saturating_add(1);
                }
            }
        }
        if !is_stopword(word) {
            content += 1;
        }
        prev = Some(word);
    }
    ev
}

/// The best-scoring family by single keywords alone, at or above the threshold (what
/// the keyword index computes; [`family_with_evidence`] decides).
#[cfg(test)]
fn family_of(lower: &str) -> Option<(Family, f32)> {
    let ev = evidence(lower);
    let mut best: Option<(Family, f32)> = None;
    for (i, fam) in Family::ALL.iter().enumerate() {
        let s = ev.word_score[i];
        if s >= FAMILY_THRESHOLD && best.is_none_or(|(_, b)| s > b) {
            best = Some((*fam, s));
        }
    }
    best
}

/// The family a clause belongs to, with its score: the best-scoring family that scores
/// at least [`FAMILY_THRESHOLD`] and has the evidence the module docs describe. In a
/// report (`report`), a problem family wins over the others.
fn family_with_evidence(lower: &str, report: bool) -> Option<(Family, f32)> {
    // Fewer than three words: too little to plan a project from.
    words(lower).nth(2)?;
    let ev = evidence(lower);
    let verb_kind = head_verb(lower).and_then(|v| {
        VERB_KINDS
            .iter()
            .find(|(verb, _)| *verb == v)
            .map(|(_, k)| *k)
    });
    let mut best: Option<(Family, f32, bool)> = None;
    let mut asked: Option<TaskKind> = None;
    for (i, fam) in Family::ALL.iter().enumerate() {
        let score = ev.score[i];
        if score < FAMILY_THRESHOLD {
            continue;
        }
        let problem = report && fam.is_problem();
        if !(ev.cues[i] >= 2 || ev.heads[i] || problem) {
            continue;
        }
        if verb_kind.is_some_and(|k| !fam.has_kind(k)) {
            continue;
        }
        // A clause that asks for one phase of the work ("write integration tests for
        // the API", "design the API") is that phase, not the whole project.
        let asked = *asked.get_or_insert_with(|| kind_of(lower));
        if PHASE_KINDS.contains(&asked) && asked != fam.kind() {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, s, p)) => (problem && !p) || (problem == p && score > s),
        };
        if better {
            best = Some((*fam, score, problem));
        }
    }
    best.map(|(f, s, _)| (f, s))
}

/// The clause's first word after leading filler ("please", "we need to").
fn head_verb(lower: &str) -> Option<&str> {
    words(lower).find(|w| !LEADING_FILLER.contains(w))
}

/// The kind a clause's hint words weigh in for (see [`KIND_HINTS`]); `generic` when
/// none does.
fn kind_of(lower: &str) -> TaskKind {
    // (kind, weight, first hint's position in KIND_HINTS), in the order first seen.
    let mut tally: Vec<(TaskKind, f32, usize)> = Vec::new();
    let head = words(lower).position(|w| !LEADING_FILLER.contains(&w));
    for (at, word) in words(lower).enumerate() {
        let first = word.as_bytes().first();
        for (pos, (hint, prefix, kind, weight)) in KIND_HINTS.iter().enumerate() {
            // Most hints differ at the first byte: skip them before comparing.
            if hint.as_bytes().first() != first {
                continue;
            }
            let hit = if *prefix {
                word.starts_with(hint)
            } else {
                word == *hint
            };
            if hit {
                let weight = if *weight >= 1.5 && head == Some(at) {
                    weight + HEAD_HINT_BONUS
                } else {
                    *weight
                };
                match tally.iter_mut().find(|(k, _, _)| k == kind) {
                    Some(t) => {
                        t.1 += weight;
                        t.2 = t.2.min(pos);
                    }
                    None => tally.push((*kind, weight, pos)),
                }
                // A word is one hint: its first.
                break;
            }
        }
    }
    tally
        .into_iter()
        .fold(None::<(TaskKind, f32, usize)>, |best, t| match best {
            Some(b) if b.1 > t.1 || (b.1 == t.1 && b.2 <= t.2) => Some(b),
            _ => Some(t),
        })
        .map_or(TaskKind::Generic, |(k, _, _)| k)
}

/// The clause's subject (see [`subject_and_target`]).
#[cfg(test)]
fn subject_of(text: &str) -> String {
    subject_and_target(text).0
}

/// Verbs whose meaning a template text would lose with the verb: the subject names the
/// work instead ("Migrate our CI …" → "the migration of our CI …").
const NOMINALISED: &[(&str, &str)] = &[
    ("set up", "the setup of "),
    ("migrate", "the migration of "),
    ("upgrade", "the upgrade of "),
    ("deploy", "the deployment of "),
];

/// The clause's subject — the clause without leading filler, its first verb, a
/// deployment target it names ("to staging") and a leading "a report on" (the
/// templates say what is made of it) — trimmed to a readable length; and the target.
fn subject_and_target(text: &str) -> (String, Option<&'static str>) {
    let mut rest = text.trim();
    let mut dropped_verb: Option<String> = None;
    loop {
        let (word, tail) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim_start()),
            None => (rest, ""),
        };
        let lw = word
            .trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
            .to_lowercase();
        if tail.is_empty() {
            break;
        }
        let is_verb = ACTION_VERBS.contains(&lw.as_str()) || FOREIGN_VERBS.contains(&lw.as_str());
        // "make sure …" is a check, not "make" of "sure …".
        let make_sure = lw == "make" && tail.to_lowercase().starts_with("sure ");
        if LEADING_FILLER.contains(&lw.as_str()) {
            rest = tail;
        } else if dropped_verb.is_none() && is_verb && !make_sure {
            rest = tail;
            let mut verb = lw;
            // A phrasal verb's particle goes with it ("set up", "clean up").
            if let Some((particle, after)) = rest.split_once(char::is_whitespace)
                && particle.eq_ignore_ascii_case("up")
                && !after.trim().is_empty()
            {
                rest = after.trim_start();
                verb.push_str(" up");
            }
            dropped_verb = Some(verb);
        } else {
            break;
        }
    }
    let (mut subject, target) = without_target(rest);
    strip_report_noun(&mut subject);
    let trimmed = subject
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!' | '?' | ';' | ','))
        .trim_end_matches(':');
    let mut out = String::with_capacity(trimmed.len() + 20);
    if let Some(v) = &dropped_verb
        && let Some((_, noun)) = NOMINALISED.iter().find(|(verb, _)| verb == v)
        && !trimmed.is_empty()
    {
        out.push_str(noun);
    }
    // A sentence's capitalised determiner reads wrong mid-sentence ("Investigate the
    // problem (The page …)"); names and acronyms keep their case.
    let first = trimmed.split_whitespace().next().unwrap_or("");
    if matches!(
        first,
        "The"
            | "A"
            | "An"
            | "Our"
            | "My"
            | "Your"
            | "Their"
            | "This"
            | "That"
            | "These"
            | "Those"
            | "Some"
            | "Users"
            | "Customers"
    ) {
        out.push_str(&first.to_lowercase());
        out.push_str(&trimmed[first.len()..]);
    } else {
        out.push_str(trimmed);
    }
    if out.len() <= MAX_SUBJECT_BYTES {
        return (out, target);
    }
    let mut cut = MAX_SUBJECT_BYTES;
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &out[..cut];
    let head = head.rfind(char::is_whitespace).map_or(head, |i| &head[..i]);
    (format!("{head}…"), target)
}

/// `text` without a deployment target phrase ("to staging", "on the production
/// cluster"), and the target.
fn without_target(text: &str) -> (String, Option<&'static str>) {
    let lower = text.to_ascii_lowercase();
    if !TARGETS.iter().any(|(t, _)| lower.contains(t)) {
        return (text.to_owned(), None);
    }
    let spans: Vec<(usize, &str)> = word_spans(text)
        .into_iter()
        .map(|(s, e)| (s, &text[s..e]))
        .collect();
    let norm = |w: &str| {
        w.trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    for (k, (start, word)) in spans.iter().enumerate() {
        if !matches!(norm(word).as_str(), "to" | "on" | "in" | "into" | "onto") {
            continue;
        }
        let mut j = k + 1;
        if spans
            .get(j)
            .is_some_and(|(_, w)| matches!(norm(w).as_str(), "the" | "our"))
        {
            j += 1;
        }
        let Some(target) = spans
            .get(j)
            .and_then(|(_, w)| TARGETS.iter().find(|(t, _)| *t == norm(w)))
            .map(|(_, shown)| *shown)
        else {
            continue;
        };
        if spans.get(j + 1).is_some_and(|(_, w)| {
            matches!(
                norm(w).as_str(),
                "environment" | "env" | "cluster" | "servers" | "server"
            )
        }) {
            j += 1;
        }
        let end = spans.get(j).map_or(text.len(), |(s, w)| s + w.len());
        let mut out = String::with_capacity(text.len());
        out.push_str(text[..*start].trim_end());
        let tail = text.get(end..).unwrap_or("");
        if !tail.trim().is_empty() {
            out.push(' ');
            out.push_str(tail.trim_start());
        }
        return (out, Some(target));
    }
    (text.to_owned(), None)
}

/// Drops a leading "a (research) report on/about" from a subject: the templates say
/// what is made of it ("Scope the research on a research report comparing …" read
/// twice). "comparing X" becomes "a comparison of X".
fn strip_report_noun(subject: &mut String) {
    let lower = subject.to_lowercase();
    let mut ws = lower.split_whitespace();
    let mut taken = 0usize;
    let mut next = ws.next();
    if next.is_some_and(|w| matches!(w, "a" | "an" | "the")) {
        taken += 1;
        next = ws.next();
    }
    if next.is_some_and(|w| matches!(w, "research" | "market" | "short" | "brief" | "detailed")) {
        taken += 1;
        next = ws.next();
    }
    if !next.is_some_and(|w| matches!(w, "report" | "study" | "whitepaper" | "paper")) {
        return;
    }
    taken += 1;
    next = ws.next();
    if next.is_some_and(|w| matches!(w, "on" | "about" | "into" | "of")) {
        taken += 1;
        next = ws.next();
    }
    let comparing = next == Some("comparing");
    if comparing {
        taken += 1;
    }
    let rest: Vec<&str> = subject.split_whitespace().skip(taken).collect();
    if rest.is_empty() {
        return;
    }
    let mut out = String::with_capacity(subject.len());
    if comparing {
        out.push_str("a comparison of ");
    }
    out.push_str(&rest.join(" "));
    *subject = out;
}

/// Abbreviations whose trailing period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "dr", "approx", "incl", "no",
];

/// Splits a request into clauses, every sentence read as an ask.
#[cfg(test)]
fn split_clauses(request: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    for sentence in split_sentences(request) {
        split_sentence(sentence, &mut pieces);
    }
    merge_fragments(pieces)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Merges fragments too short to stand alone (under three words) into their
/// neighbour.
fn merge_fragments(pieces: Vec<(String, bool)>) -> Vec<(String, bool)> {
    let mut merged: Vec<(String, bool)> = Vec::with_capacity(pieces.len());
    for (c, sequenced) in pieces {
        let n = c.split_whitespace().count();
        match merged.last_mut() {
            Some((last, _)) if n < 3 => {
                last.push(' ');
                last.push_str(&c);
            }
            _ => merged.push((c, sequenced)),
        }
    }
    if merged.len() > 1 && merged[0].0.split_whitespace().count() < 3 {
        let (first, sequenced) = merged.remove(0);
        merged[0] = (format!("{first} {}", merged[0].0), sequenced || merged[0].1);
    }
    merged
}

/// Byte spans of the whitespace-separated words of `text`.
fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut cur: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = cur.take() {
                spans.push((s, i));
            }
        } else if cur.is_none() {
            cur = Some(i);
        }
    }
    if let Some(s) = cur {
        spans.push((s, text.len()));
    }
    spans
}

/// Words that, starting a clause, say it comes after the one before.
fn is_sequencing(word: &str) -> bool {
    matches!(
        word,
        "then"
            | "dann"
            | "danach"
            | "puis"
            | "ensuite"
            | "luego"
            | "finally"
            | "next"
            | "afterwards"
            | "lastly"
    )
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end = match c {
            '\n' | ';' | '!' | '?' => true,
            '.' => {
                let next_is_space = bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace());
                let word_before = text[start..i]
                    .rsplit(|c: char| c.is_whitespace())
                    .next()
                    .unwrap_or("")
                    .to_lowercase();
                next_is_space && !ABBREVIATIONS.contains(&word_before.as_str())
            }
            _ => false,
        };
        if end {
            let s = text[start..i].trim();
            if s.chars().any(char::is_alphanumeric) {
                out.push(s);
            }
            start = i + c.len_utf8();
        }
    }
    let s = text[start..].trim();
    if s.chars().any(char::is_alphanumeric) {
        out.push(s);
    }
    out
}

/// Splits one sentence into clauses at sequencing words and at `and`/commas before an
/// action verb; each clause comes with whether a sequencing word introduced it.
fn split_sentence(sentence: &str, out: &mut Vec<(String, bool)>) {
    let spans = word_spans(sentence);
    let norm = |k: usize| -> String {
        let (s, e) = spans[k];
        sentence[s..e]
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let is_verb = |w: &str| ACTION_VERBS.contains(&w) || FOREIGN_VERBS.contains(&w);
    let mut clause_start = 0usize; // index into spans
    // (end word idx exclusive, next start idx, sequenced)
    let mut cuts: Vec<(usize, usize, bool)> = Vec::new();
    let mut k = 0;
    while k < spans.len() {
        let word = norm(k);
        let ends_with_comma = sentence[spans[k].0..spans[k].1].ends_with(',');
        // "and make sure …" checks the work before it; it is not a new action.
        let make_sure =
            |at: usize| norm(at) == "make" && at + 1 < spans.len() && norm(at + 1) == "sure";
        let mut cut: Option<(usize, usize, bool)> = None;
        if matches!(
            word.as_str(),
            "then" | "dann" | "puis" | "luego" | "ensuite"
        ) && k > clause_start
        {
            cut = Some((k, k + 1, true));
        } else if (word == "after" || word == "followed") && k + 1 < spans.len() {
            let next = norm(k + 1);
            if (word == "after" && next == "that") || (word == "followed" && next == "by") {
                cut = Some((k, k + 2, true));
            }
        } else if matches!(word.as_str(), "and" | "und" | "et" | "y") && k + 1 < spans.len() {
            let next = norm(k + 1);
            if is_sequencing(&next) {
                cut = Some((k, k + 2, true));
            } else if is_verb(&next) && !make_sure(k + 1) {
                cut = Some((k, k + 1, false));
            }
        } else if ends_with_comma && k + 1 < spans.len() {
            let next = norm(k + 1);
            if is_verb(&next) && !make_sure(k + 1) {
                cut = Some((k + 1, k + 1, false));
            }
        }
        if let Some((end, next_start, sequenced)) = cut {
            // Only split when both sides can stand alone (three words or more: a shorter
            // fragment would be merged back without its conjunction, "login deploy it").
            let left = end.saturating_sub(clause_start);
            let right = spans.len().saturating_sub(next_start);
            if left >= 3 && right >= 3 {
                cuts.push((end, next_start, sequenced));
                clause_start = next_start;
                k = next_start;
                continue;
            }
        }
        k += 1;
    }
    let starts_sequenced = spans.first().is_some_and(|_| is_sequencing(&norm(0)));
    let mut from = 0usize;
    let mut sequenced = starts_sequenced;
    for (end, next_start, seq) in cuts {
        push_span(sentence, &spans, from, end, sequenced, out);
        from = next_start;
        sequenced = seq;
    }
    push_span(sentence, &spans, from, spans.len(), sequenced, out);
}

fn push_span(
    sentence: &str,
    spans: &[(usize, usize)],
    from: usize,
    to: usize,
    sequenced: bool,
    out: &mut Vec<(String, bool)>,
) {
    if from >= to || to > spans.len() {
        return;
    }
    let text = sentence[spans[from].0..spans[to - 1].1]
        .trim_end_matches(',')
        .trim();
    if text.chars().any(char::is_alphanumeric) {
        out.push((text.to_owned(), sequenced));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn plan(request: &str) -> TaskDag {
        HeuristicDecomposer
            .decompose_sync(request, &Limits::default())
            .unwrap()
    }

    fn kinds(dag: &TaskDag) -> BTreeSet<TaskKind> {
        dag.tasks().map(|t| t.kind).collect()
    }

    /// Everything observable about a DAG's structure and tasks.
    fn shape(dag: &TaskDag) -> Vec<String> {
        let mut out: Vec<String> = dag.nodes().map(|n| format!("{n:?}")).collect();
        for t in dag.tasks() {
            let id = t.id.as_str();
            out.push(format!(
                "{id}: deps {:?} pre {:?} post {:?} leaf {}",
                dag.declared_dependencies(id),
                dag.prerequisites(id),
                dag.dependents(id),
                dag.is_leaf(id)
            ));
        }
        out.push(format!("{:?}", dag.topological_order()));
        out.push(format!("{:?}", dag.generations()));
        out.push(format!("{:?} {}", dag.limits(), dag.depth()));
        out
    }

    /// A follow-up clause that asks again for a phase the previous clause's template
    /// already has, about the same work, joins that phase instead of planning the work
    /// twice (the README's example planned two deployments, 23 tasks); one about
    /// something else still gets its own template.
    #[test]
    fn a_follow_up_that_repeats_a_phase_joins_it() {
        let dag = plan("Fix the crash on login, then deploy the fix");
        assert_eq!(dag.len(), 9, "{:?}", shape(&dag));
        let deploys: Vec<&str> = dag
            .tasks()
            .filter(|t| t.kind == TaskKind::Deploy)
            .map(|t| t.description.as_str())
            .collect();
        assert_eq!(
            deploys,
            [
                "Ship the fix (the crash on login); deploy the fix",
                "Deploy the fix (the crash on login)"
            ]
        );
        let dag = plan("Build a SaaS business for invoices and launch a marketing campaign for it");
        assert!(
            dag.tasks().any(|t| t
                .description
                .ends_with("to market; launch a marketing campaign for it")),
            "{:?}",
            shape(&dag)
        );
        assert!(
            !dag.tasks()
                .any(|t| t.description.contains("for a marketing campaign for it")),
            "{:?}",
            shape(&dag)
        );
        // Another subject: two plans of work.
        let dag = plan("Fix the crash on login, then deploy the billing service");
        assert!(
            dag.task("t2")
                .is_some_and(|t| t.description == "deploy the billing service")
        );
        assert!(
            dag.tasks()
                .any(|t| t.description.contains("(the crash on login)"))
        );
        // A two-word follow-up stays in its sentence, conjunction and all.
        let dag = plan("Fix the crash on login and deploy it");
        assert!(
            dag.tasks()
                .all(|t| !t.description.contains("login deploy it")),
            "{:?}",
            shape(&dag)
        );
    }

    #[test]
    fn prebuilt_templates_equal_building_them() {
        let limits = Limits::default();
        for family in Family::ALL {
            for expansion in [Expansion::Phases, Expansion::Full] {
                for subject in ["a SaaS business for invoices", "", "{s} ünïcode {x}"] {
                    let mut built = TaskDag::new(limits.clone());
                    let clause = Clause {
                        text: String::new(),
                        subject: subject.to_owned(),
                        family: Some(family),
                        kind: family.kind(),
                        target: None,
                        sequenced: false,
                        also: Vec::new(),
                    };
                    Builder {
                        dag: &mut built,
                        context: None,
                    }
                    .template(family, &clause, None, "t", expansion)
                    .unwrap();
                    let p = prebuilt(family, expansion).unwrap();
                    let mut copy = p.dag.clone();
                    copy.set_limits(limits.clone());
                    copy.rewrite_descriptions(|i, d| {
                        *d = fill(p.texts[i], subject, DEFAULT_TARGET)
                    });
                    assert_eq!(shape(&copy), shape(&built), "{family:?} {expansion:?}");
                }
            }
        }
        // And through the public entry point, with limits that force the phases only.
        let tight = Limits {
            max_depth: 1,
            ..Limits::default()
        };
        let dag = HeuristicDecomposer
            .decompose_sync("Build a SaaS business for invoices", &tight)
            .unwrap();
        assert!(dag.len() > 1 && dag.depth() == 1, "{}", dag.len());
        assert_eq!(dag.limits(), &tight);
    }

    #[test]
    fn saas_request_gets_a_two_level_plan() {
        let dag = plan("Build a SaaS business for invoices");
        assert!(dag.len() >= 7, "{} tasks", dag.len());
        assert_eq!(dag.depth(), 2);
        let k = kinds(&dag);
        for want in [
            K::Backend,
            K::Frontend,
            K::Marketing,
            K::Deploy,
            K::Finance,
            K::Test,
        ] {
            assert!(k.contains(&want), "missing {want}");
        }
        let t = dag.task("t2.2").unwrap();
        assert_eq!(t.kind, K::Backend);
        assert!(
            t.description.contains("a SaaS business for invoices"),
            "{}",
            t.description
        );
        // The build phase waits for discovery; its subtasks inherit that.
        assert!(dag.prerequisites("t2.1").iter().any(|p| p.as_str() == "t1"));
        assert!(dag.is_acyclic());
    }

    #[test]
    fn compound_request_splits_into_families_in_order() {
        let dag = plan("Launch a marketing campaign for our new app and analyse the results");
        let t1 = dag.task("t1").unwrap();
        let t2 = dag.task("t2").unwrap();
        assert_eq!(t1.kind, K::Marketing);
        assert_eq!(
            t1.description,
            "Launch a marketing campaign for our new app"
        );
        assert_eq!(t2.kind, K::Analyze);
        assert_eq!(t2.description, "analyse the results");
        assert_eq!(dag.declared_dependencies("t2"), [&TaskId::new("t1")]);
        assert_eq!(dag.depth(), 3);
        let k = kinds(&dag);
        assert!(k.contains(&K::Marketing) && k.contains(&K::Analyze));
        assert!(
            !k.contains(&K::Backend),
            "no software work in a marketing request"
        );
    }

    /// The keyword index scores exactly as a scan of every keyword list would.
    fn family_scan(lower: &str) -> Option<(Family, f32)> {
        let mut scores = [0.0f32; FAMILIES];
        for word in words(lower) {
            for (i, fam) in Family::ALL.iter().enumerate() {
                scores[i] += fam
                    .keywords()
                    .iter()
                    .filter(|k| k.matches(word))
                    .map(|k| k.weight)
                    .fold(0.0f32, f32::max);
            }
        }
        let mut best: Option<(Family, f32)> = None;
        for (i, fam) in Family::ALL.iter().enumerate() {
            if scores[i] >= FAMILY_THRESHOLD && best.is_none_or(|(_, s)| scores[i] > s) {
                best = Some((*fam, scores[i]));
            }
        }
        best
    }

    proptest::proptest! {
        #[test]
        fn keyword_index_agrees_with_a_scan(
            words in proptest::collection::vec(
                "(saas|subscription|market|marketing|campaign|analy[a-z]{0,6}|deploy[a-z]{0,4}|bug|fix|crash|research|report|app|build|[a-z]{1,9})",
                0..12,
            )
        ) {
            let text = words.join(" ");
            proptest::prop_assert_eq!(family_of(&text), family_scan(&text));
        }
    }

    #[test]
    fn families_are_recognised() {
        let check = |text: &str, want: Family| {
            let got = HeuristicDecomposer.classify(text).map(|(f, _)| f);
            assert_eq!(got, Some(want), "{text}");
        };
        check("Build a SaaS business for invoices", Family::SaasBusiness);
        check(
            "Develop a mobile app for booking tennis courts",
            Family::SoftwareProduct,
        );
        check(
            "Run an SEO and social media campaign",
            Family::MarketingCampaign,
        );
        check("Analyse last quarter's churn data", Family::DataAnalysis);
        check(
            "Research the literature on vector databases and write a report",
            Family::ResearchReport,
        );
        check(
            "Deploy the service to Kubernetes with Terraform",
            Family::DeploymentOps,
        );
        check("Fix the crash when uploading large files", Family::BugFix);
        assert_eq!(HeuristicDecomposer.classify("hello there"), None);
    }

    #[test]
    fn single_clause_without_family_is_one_typed_task() {
        let dag = plan("Write a haiku about autumn");
        assert_eq!(dag.len(), 1);
        assert_eq!(dag.task("t1").unwrap().kind, K::Document);
        let dag = plan("Ponder the meaning of life");
        assert_eq!(dag.task("t1").unwrap().kind, K::Generic);
    }

    #[test]
    fn sentences_and_sequencing_words_split() {
        let c = split_clauses(
            "Set up the database. Then write the migration scripts; finally review them all carefully",
        );
        assert_eq!(
            c,
            [
                "Set up the database",
                "Then write the migration scripts",
                "finally review them all carefully"
            ]
        );
        let c = split_clauses(
            "Design the schema for orders, build the API for it and then deploy it to staging",
        );
        assert_eq!(
            c,
            [
                "Design the schema for orders",
                "build the API for it",
                "deploy it to staging"
            ]
        );
        // "and" between nouns does not split; neither do abbreviations or decimals.
        let c = split_clauses("Compare Postgres and MySQL, e.g. for version 3.5 workloads");
        assert_eq!(c.len(), 1, "{c:?}");
    }

    #[test]
    fn big_requests_shallow_instead_of_failing() {
        let request: String = (0..100)
            .map(|i| format!("Build a SaaS business for invoices of shop {i}. "))
            .collect();
        let dag = HeuristicDecomposer
            .decompose_sync(&request, &Limits::default())
            .unwrap();
        assert!(dag.len() <= 1_000);
        assert!(dag.len() >= 100);
        let tight = Limits {
            max_tasks: 10,
            ..Limits::default()
        };
        let dag = HeuristicDecomposer
            .decompose_sync(&request, &tight)
            .unwrap();
        assert_eq!(dag.len(), 10);
    }

    #[test]
    fn rejects_bad_requests() {
        let l = Limits::default();
        assert!(matches!(
            HeuristicDecomposer.decompose_sync("   ", &l),
            Err(HtdagError::EmptyRequest)
        ));
        assert!(matches!(
            HeuristicDecomposer.decompose_sync(&"x ".repeat(2_501), &l),
            Err(HtdagError::RequestTooLong {
                len: 5_002,
                max: 5_000
            })
        ));
    }

    /// The pieces behind the plan shapes of `tests/it/plans.rs`.
    #[test]
    fn asks_statements_targets_and_kinds() {
        assert!(is_ask(
            "Add a review screen where accountants can correct fields"
        ));
        assert!(is_ask("We need a dashboard of weekly active users"));
        assert!(is_ask("The work must ship behind a feature flag"));
        assert!(is_ask("Can you make it faster?"));
        assert!(!is_ask("The extraction accuracy is currently 82%"));
        assert!(!is_ask("Users can't log in since this morning"));
        assert_eq!(
            without_target("it to the staging cluster"),
            ("it".to_owned(), Some("staging"))
        );
        assert_eq!(
            without_target("the service to Kubernetes"),
            ("the service to Kubernetes".to_owned(), None)
        );
        assert_eq!(
            subject_and_target("Deploy the billing service to prod, please").1,
            Some("production")
        );
        assert_eq!(kind_of("write unit tests"), K::Test);
        assert_eq!(kind_of("improve the onboarding emails"), K::Marketing);
        assert_eq!(kind_of("document the new review screen"), K::Document);
        assert_eq!(kind_of("optimise the routing of genesis"), K::Optimize);
        let c = split_clauses("Erstelle eine Kampagne für die App und analysiere die Ergebnisse");
        assert_eq!(c.len(), 2, "{c:?}");
        let c =
            split_clauses("Migrate our CI to GitHub and make sure the pipeline signs artifacts");
        assert_eq!(c.len(), 1, "{c:?}");
        // One strong cue heading the clause is evidence; elsewhere it is not.
        assert_eq!(
            family_with_evidence("research vector databases", false).map(|f| f.0),
            Some(Family::ResearchReport)
        );
        assert_eq!(
            family_with_evidence(
                "update the privacy policy to mention the new analytics cookies",
                false
            ),
            None
        );
        // In a report, one cue of a problem family is enough, and it wins.
        assert_eq!(
            family_with_evidence("the signup form does not work", true).map(|f| f.0),
            Some(Family::BugFix)
        );
    }

    #[test]
    fn long_subjects_are_cut_at_a_word() {
        let s = subject_of(&format!("Build {}", "invoice ".repeat(60)));
        assert!(s.len() <= MAX_SUBJECT_BYTES + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn templates_fill_every_subject_slot_and_keep_other_braces() {
        assert_eq!(fill("Plan {s} and ship {s}", "x", "p"), "Plan x and ship x");
        assert_eq!(fill("{s}", "Ünïcode", "p"), "Ünïcode");
        assert_eq!(fill("keep {braces} {", "x", "p"), "keep {braces} {");
        assert_eq!(fill("no slot", "x", "p"), "no slot");
        assert_eq!(fill("to {env}: {s}", "x", "staging"), "to staging: x");
        assert_eq!(numbered_id("t", "", 3).as_str(), "t3");
        assert_eq!(numbered_id("t1.2", ".", 10).as_str(), "t1.2.10");
        assert_eq!(numbered_id("t", "", 0).as_str(), "t0");
        let long = "p".repeat(70);
        assert_eq!(numbered_id(&long, ".", 7).as_str(), format!("{long}.7"));
    }
}
