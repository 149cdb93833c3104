//! A decomposer that needs no LLM: request families with multi-level templates, and
//! clause splitting for compound requests.
//!
//! How a request is read:
//! 1. It is split into sentences, and sentences into clauses at sequencing words
//!    (`then`, `after that`, `followed by`) and at `and`/commas that introduce a new
//!    action verb ("launch a campaign **and analyse** the results").
//! 2. Each clause is scored against seven request families by weighted keywords
//!    (stems such as `analy*` cover analyse/analysis/analytics). A clause that scores at
//!    least [`FAMILY_THRESHOLD`] gets that family's template: phases with subtasks and
//!    dependencies between them.
//! 3. A clause with no family becomes one task whose kind is inferred from its words;
//!    only when no word suggests a kind is it `generic`.
//! 4. Clauses run in the order written: each depends on the one before it.
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
}

impl Family {
    /// Every family, in tie-break order (earlier wins a tie).
    pub const ALL: [Family; 7] = [
        Family::SaasBusiness,
        Family::BugFix,
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
        }
    }
}

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
    w("marketing", 3.0),
    p("campaign", 3.0),
    p("promot", 2.0),
    p("advertis", 2.5),
    p("brand", 1.5),
    w("seo", 2.5),
    w("social", 1.0),
    w("audience", 1.5),
    p("newsletter", 2.0),
    w("launch", 0.5),
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
    w("error", 1.5),
    w("errors", 1.5),
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
        "Launch {s} in production",
        &["product"],
        &[
            leaf(
                "deploy",
                K::Deploy,
                "Deploy {s} to production through a CI/CD pipeline",
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
            leaf(
                "deploy",
                K::Deploy,
                "Deploy {s} to production",
                &["ci/cd"],
                &[],
            ),
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
                "Run {s} on staging and smoke-test it",
                &["testing"],
                &[],
            ),
            leaf(
                "production",
                K::Deploy,
                "Roll out {s} to production progressively",
                &["release"],
                &["staging"],
            ),
        ],
    ),
    phase(
        "operate",
        K::Monitor,
        "Operate after {s}",
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
        "Investigate {s}",
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
                "Verify in production that the problem is resolved ({s})",
                &["observability"],
                &["deploy"],
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
    "monitor",
    "optimise",
    "optimize",
    "plan",
    "prepare",
    "price",
    "publish",
    "refactor",
    "release",
    "report",
    "research",
    "review",
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

/// Kind inferred from a word, for clauses that match no family.
const KIND_HINTS: &[(&str, bool, TaskKind)] = &[
    ("test", true, K::Test),
    ("qa", false, K::Test),
    ("deploy", true, K::Deploy),
    ("release", false, K::Deploy),
    ("monitor", true, K::Monitor),
    ("alert", true, K::Monitor),
    ("secur", true, K::Security),
    ("audit", true, K::Security),
    ("vulnerab", true, K::Security),
    ("research", true, K::Research),
    ("investigat", true, K::Research),
    ("analy", true, K::Analyze),
    ("metric", true, K::Analyze),
    ("market", true, K::Marketing),
    ("sell", true, K::Sales),
    ("sales", false, K::Sales),
    ("customer", true, K::Support),
    ("support", false, K::Support),
    ("price", true, K::Finance),
    ("pricing", false, K::Finance),
    ("budget", true, K::Finance),
    ("invoice", true, K::Finance),
    ("cost", true, K::Finance),
    ("design", true, K::Design),
    ("architect", true, K::Design),
    ("ui", false, K::Frontend),
    ("frontend", false, K::Frontend),
    ("css", false, K::Frontend),
    ("page", true, K::Frontend),
    ("api", false, K::Backend),
    ("database", true, K::Backend),
    ("backend", false, K::Backend),
    ("endpoint", true, K::Backend),
    ("requirement", true, K::Specify),
    ("spec", true, K::Specify),
    ("document", true, K::Document),
    ("write", false, K::Document),
    ("summar", true, K::Document),
    ("optimi", true, K::Optimize),
    ("improve", true, K::Optimize),
    ("build", false, K::Implement),
    ("implement", true, K::Implement),
    ("code", false, K::Implement),
    ("develop", true, K::Implement),
    ("refactor", true, K::Implement),
];

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
    /// Later clauses folded into this one's template (see [`folds_into`]): the kind of
    /// the phase each asks for again, and its text.
    also: Vec<(TaskKind, String)>,
}

/// Words a follow-up clause's subject starts with when it means the earlier clause's
/// work ("deploy **the fix**", "test **it**").
const BACK_REFERENCES: &[&str] = &[
    "it", "them", "this", "that", "these", "those", "fix", "fixes", "change", "changes", "patch",
    "update", "updates", "result", "results", "work",
];

/// Whether clause `next` only asks again for a phase `prev`'s template already has,
/// about the same work: it has a family of its own, a top-level step of `prev`'s
/// template has that family's kind, and its subject refers back ("Fix the crash on
/// login, then deploy the fix": the bug-fix template ships the fix already; "… and
/// launch a marketing campaign for it"). Such a
/// clause is folded into that phase instead of expanding a second template (which
/// would plan the work twice). Returns the phase's kind.
fn folds_into(prev: &Clause, next: &Clause) -> Option<TaskKind> {
    let (Some(pf), Some(nf)) = (prev.family, next.family) else {
        return None;
    };
    let kind = nf.kind();
    if pf == nf || !pf.template().iter().any(|s| s.kind == kind) {
        return None;
    }
    let subject = next.subject.to_lowercase();
    let mut words = subject
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .skip_while(|w| matches!(*w, "the" | "our" | "your" | "my" | "their"));
    let last = subject
        .rsplit(|c: char| !c.is_alphanumeric())
        .find(|w| !w.is_empty());
    let refers_back = subject == prev.subject.to_lowercase()
        || words.next().is_some_and(|w| BACK_REFERENCES.contains(&w))
        || last.is_some_and(|w| matches!(w, "it" | "them" | "this" | "that"));
    refers_back.then_some(kind)
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
        let clauses = split_clauses(request);
        let classified: Vec<Clause> = if clauses.is_empty() {
            vec![classify(request.trim())]
        } else {
            clauses.iter().map(|c| classify(c)).collect()
        };
        // A follow-up that asks again for a phase the previous clause's template has
        // joins that phase.
        let mut clauses: Vec<Clause> = Vec::with_capacity(classified.len());
        for clause in classified {
            if let Some(prev) = clauses.last_mut()
                && let Some(kind) = folds_into(prev, &clause)
            {
                prev.also.push((kind, clause.text));
                continue;
            }
            clauses.push(clause);
        }
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
        // carry the subject.
        if !compound
            && expansion > Expansion::Flat
            && let [clause] = clauses.as_slice()
            && clause.also.is_empty()
            && let Some(family) = clause.family
            && let Some(prebuilt) = prebuilt(family, expansion)
        {
            let mut dag = prebuilt.dag.clone();
            dag.set_limits(limits.clone());
            dag.rewrite_descriptions(|position, description| {
                if let Some(text) = prebuilt.texts.get(position) {
                    *description = fill(text, &clause.subject);
                }
            });
            return Ok(dag);
        }
        let mut dag = TaskDag::new(limits.clone());
        dag.reserve(size_of(&clauses, compound, expansion).0);
        let mut b = Builder { dag: &mut dag };
        // Clauses past the task limit are folded into the last task that fits.
        let clause_limit = limits.max_tasks.max(1);
        let (kept, folded) = clauses.split_at(clauses.len().min(clause_limit));
        let mut prev: Option<TaskId> = None;
        for (i, clause) in kept.iter().enumerate() {
            let id = TaskId::new(format!("t{}", i + 1));
            let is_last = i + 1 == kept.len();
            let extra: Vec<&str> = if is_last {
                folded.iter().map(|c| c.text.as_str()).collect()
            } else {
                Vec::new()
            };
            match clause.family {
                Some(family) if !compound && expansion > Expansion::Flat => {
                    b.template(family, clause, None, "t", expansion)?;
                }
                Some(family) if expansion > Expansion::Flat => {
                    let top =
                        b.clause_task(&id, clause, family.kind(), &extra, Some(family), true)?;
                    let depth_left = expansion;
                    b.template(family, clause, Some(&top), id.as_str(), depth_left)?;
                    b.chain(prev.as_ref(), &top)?;
                    prev = Some(top);
                }
                _ => {
                    let top =
                        b.clause_task(&id, clause, clause.kind, &extra, clause.family, false)?;
                    b.chain(prev.as_ref(), &top)?;
                    prev = Some(top);
                }
            }
        }
        if dag.is_empty() {
            return Err(HtdagError::EmptyDecomposition {
                decomposer: "heuristic".into(),
            });
        }
        Ok(dag)
    }

    /// The family a request (or clause) belongs to, if any, with its score.
    pub fn classify(&self, text: &str) -> Option<(Family, f32)> {
        family_of(&text.to_lowercase())
    }
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
        also: Vec::new(),
    };
    Builder { dag: &mut dag }
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
        self.dag.add_task(task, None)?;
        Ok(id.clone())
    }

    fn chain(&mut self, prev: Option<&TaskId>, next: &TaskId) -> Result<(), HtdagError> {
        if let Some(p) = prev {
            self.dag.add_dependency(p, next)?;
        }
        Ok(())
    }

    /// Instantiates a family template for `clause` under `parent`, ids prefixed with
    /// `prefix`. The text of a clause folded into it is added to the first top-level
    /// step of its kind.
    fn template(
        &mut self,
        family: Family,
        clause: &Clause,
        parent: Option<&TaskId>,
        prefix: &str,
        expansion: Expansion,
    ) -> Result<(), HtdagError> {
        let subject = clause.subject.as_str();
        let steps = family.template();
        let sep = if parent.is_some() { "." } else { "" };
        let ids: Vec<TaskId> = (1..=steps.len())
            .map(|i| numbered_id(prefix, sep, i))
            .collect();
        let mut also: Vec<Option<&str>> = vec![None; steps.len()];
        for (kind, text) in &clause.also {
            if let Some(i) = steps.iter().position(|s| s.kind == *kind) {
                also[i] = Some(text);
            }
        }
        for ((step, id), also) in steps.iter().zip(&ids).zip(also) {
            let with_children = expansion == Expansion::Full && !step.children.is_empty();
            self.step(step, id, family, subject, parent, with_children, also)?;
            if with_children {
                let child_ids: Vec<TaskId> = (1..=step.children.len())
                    .map(|i| numbered_id(id.as_str(), ".", i))
                    .collect();
                for (child, cid) in step.children.iter().zip(&child_ids) {
                    self.step(child, cid, family, subject, Some(id), false, None)?;
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
        subject: &str,
        parent: Option<&TaskId>,
        composite: bool,
        also: Option<&str>,
    ) -> Result<(), HtdagError> {
        let mut description = fill(step.text, subject);
        if let Some(also) = also {
            description.push_str("; ");
            description.push_str(also);
        }
        let mut task = Task::new(id.clone(), step.kind, description)
            .with_estimated_tokens(estimated_tokens(step.kind, composite))
            .with_metadata("family", family.as_str())
            .with_metadata("step", step.key);
        task.required_skills = step.skills.iter().map(|s| (*s).into()).collect();
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

/// A template text with every `{s}` replaced by `subject`, in one allocation.
fn fill(text: &str, subject: &str) -> String {
    let mut out = String::with_capacity(text.len() + subject.len());
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with("{s}") {
            out.push_str(subject);
            rest = &rest[i + 3..];
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

fn classify(text: &str) -> Clause {
    let lower = text.to_lowercase();
    let family = family_of(&lower).map(|(f, _)| f);
    let kind = family.map_or_else(|| kind_of(&lower), Family::kind);
    Clause {
        text: text.to_owned(),
        subject: subject_of(text),
        family,
        kind,
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
}

static KEYWORDS: std::sync::LazyLock<KeywordIndex> = std::sync::LazyLock::new(|| {
    let mut by_word: genesis_core::fasthash::FxHashMap<&'static str, Vec<(usize, bool, f32)>> =
        Default::default();
    let (mut shortest, mut longest) = (usize::MAX, 0);
    for (i, fam) in Family::ALL.iter().enumerate() {
        for k in fam.keywords() {
            by_word
                .entry(k.word)
                .or_default()
                .push((i, k.prefix, k.weight));
            if k.prefix {
                shortest = shortest.min(k.word.len());
                longest = longest.max(k.word.len());
            }
        }
    }
    KeywordIndex {
        by_word,
        prefix_lens: shortest..=longest,
    }
});

fn family_of(lower: &str) -> Option<(Family, f32)> {
    let index = &*KEYWORDS;
    let mut scores = [0.0f32; 7];
    for word in words(lower) {
        // A word counts once per family, at its best keyword: the word itself (a whole
        // word or a stem equal to it), or a stem that is a proper prefix of it.
        let mut best = [0.0f32; 7];
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
            if let Some(entries) = word.get(..k).and_then(|p| index.by_word.get(p)) {
                take(entries, false);
            }
        }
        for (score, b) in scores.iter_mut().zip(best) {
            *score += b;
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

fn kind_of(lower: &str) -> TaskKind {
    for word in words(lower) {
        for (hint, prefix, kind) in KIND_HINTS {
            let hit = if *prefix {
                word.starts_with(hint)
            } else {
                word == *hint
            };
            if hit {
                return *kind;
            }
        }
    }
    TaskKind::Generic
}

/// The clause without leading filler and its first verb, trimmed to a readable length.
fn subject_of(text: &str) -> String {
    let mut rest = text.trim();
    let mut dropped_verb = false;
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
        if LEADING_FILLER.contains(&lw.as_str()) {
            rest = tail;
        } else if !dropped_verb && ACTION_VERBS.contains(&lw.as_str()) {
            rest = tail;
            dropped_verb = true;
        } else {
            break;
        }
    }
    let trimmed = rest
        .trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!' | '?' | ';' | ','));
    if trimmed.len() <= MAX_SUBJECT_BYTES {
        return trimmed.to_owned();
    }
    let mut cut = MAX_SUBJECT_BYTES;
    while !trimmed.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &trimmed[..cut];
    let head = head.rfind(char::is_whitespace).map_or(head, |i| &head[..i]);
    format!("{head}…")
}

/// Abbreviations whose trailing period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "e.g", "i.e", "etc", "vs", "mr", "mrs", "dr", "approx", "incl", "no",
];

/// Splits a request into clauses (see the module docs).
fn split_clauses(request: &str) -> Vec<String> {
    let mut clauses = Vec::new();
    for sentence in split_sentences(request) {
        split_sentence(sentence, &mut clauses);
    }
    // Merge fragments too short to stand alone into their neighbour.
    let mut merged: Vec<String> = Vec::with_capacity(clauses.len());
    for c in clauses {
        let n = c.split_whitespace().count();
        match merged.last_mut() {
            Some(last) if n < 3 => {
                last.push(' ');
                last.push_str(&c);
            }
            _ => merged.push(c),
        }
    }
    if merged.len() > 1 && merged[0].split_whitespace().count() < 3 {
        let first = merged.remove(0);
        merged[0] = format!("{first} {}", merged[0]);
    }
    merged
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

fn split_sentence(sentence: &str, out: &mut Vec<String>) {
    // Word spans with byte offsets.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut cur: Option<usize> = None;
    for (i, c) in sentence.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = cur.take() {
                spans.push((s, i));
            }
        } else if cur.is_none() {
            cur = Some(i);
        }
    }
    if let Some(s) = cur {
        spans.push((s, sentence.len()));
    }
    let norm = |k: usize| -> String {
        let (s, e) = spans[k];
        sentence[s..e]
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_lowercase()
    };
    let mut clause_start = 0usize; // index into spans
    let mut cuts: Vec<(usize, usize)> = Vec::new(); // (end word idx exclusive, next start idx)
    let mut k = 0;
    while k < spans.len() {
        let word = norm(k);
        let ends_with_comma = sentence[spans[k].0..spans[k].1].ends_with(',');
        let mut cut: Option<(usize, usize)> = None;
        if word == "then" && k > clause_start {
            cut = Some((k, k + 1));
        } else if (word == "after" || word == "followed") && k + 1 < spans.len() {
            let next = norm(k + 1);
            if (word == "after" && next == "that") || (word == "followed" && next == "by") {
                cut = Some((k, k + 2));
            }
        } else if word == "and" && k + 1 < spans.len() {
            let next = norm(k + 1);
            if next == "then" {
                cut = Some((k, k + 2));
            } else if ACTION_VERBS.contains(&next.as_str()) {
                cut = Some((k, k + 1));
            }
        } else if ends_with_comma && k + 1 < spans.len() {
            let next = norm(k + 1);
            if ACTION_VERBS.contains(&next.as_str()) {
                cut = Some((k + 1, k + 1));
            }
        }
        if let Some((end, next_start)) = cut {
            // Only split when both sides can stand alone (three words or more: a shorter
            // fragment would be merged back without its conjunction, "login deploy it").
            let left = end.saturating_sub(clause_start);
            let right = spans.len().saturating_sub(next_start);
            if left >= 3 && right >= 3 {
                cuts.push((end, next_start));
                clause_start = next_start;
                k = next_start;
                continue;
            }
        }
        k += 1;
    }
    let mut from = 0usize;
    for (end, next_start) in cuts {
        push_span(sentence, &spans, from, end, out);
        from = next_start;
    }
    push_span(sentence, &spans, from, spans.len(), out);
}

fn push_span(
    sentence: &str,
    spans: &[(usize, usize)],
    from: usize,
    to: usize,
    out: &mut Vec<String>,
) {
    if from >= to || to > spans.len() {
        return;
    }
    let text = sentence[spans[from].0..spans[to - 1].1]
        .trim_end_matches(',')
        .trim();
    if text.chars().any(char::is_alphanumeric) {
        out.push(text.to_owned());
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
                        also: Vec::new(),
                    };
                    Builder { dag: &mut built }
                        .template(family, &clause, None, "t", expansion)
                        .unwrap();
                    let p = prebuilt(family, expansion).unwrap();
                    let mut copy = p.dag.clone();
                    copy.set_limits(limits.clone());
                    copy.rewrite_descriptions(|i, d| *d = fill(p.texts[i], subject));
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
        let mut scores = [0.0f32; 7];
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
        let sentence = "Build a SaaS business for invoices. ";
        let request = sentence.repeat(100);
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

    #[test]
    fn long_subjects_are_cut_at_a_word() {
        let s = subject_of(&format!("Build {}", "invoice ".repeat(60)));
        assert!(s.len() <= MAX_SUBJECT_BYTES + '…'.len_utf8());
        assert!(s.ends_with('…'));
    }

    #[test]
    fn templates_fill_every_subject_slot_and_keep_other_braces() {
        assert_eq!(fill("Plan {s} and ship {s}", "x"), "Plan x and ship x");
        assert_eq!(fill("{s}", "Ünïcode"), "Ünïcode");
        assert_eq!(fill("keep {braces} {", "x"), "keep {braces} {");
        assert_eq!(fill("no slot", "x"), "no slot");
        assert_eq!(numbered_id("t", "", 3).as_str(), "t3");
        assert_eq!(numbered_id("t1.2", ".", 10).as_str(), "t1.2.10");
        assert_eq!(numbered_id("t", "", 0).as_str(), "t0");
        let long = "p".repeat(70);
        assert_eq!(numbered_id(&long, ".", 7).as_str(), format!("{long}.7"));
    }
}
