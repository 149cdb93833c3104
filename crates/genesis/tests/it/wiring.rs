//! `orchestrator_from_config`: with LLM providers, DAAO chooses only among the models
//! they serve, and every call runs on the planned model through the provider of its
//! kind; the flag reloader reads the flags file off the async workers.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use genesis::core::{AgentId, ModelId, Task, TaskId, TaskKind};
use genesis::providers::{CallError, LlmAgent, LlmProviders};
use genesis::run::{Agent, AgentError, AgentRequest, RunStatus};
use genesis::{GenesisConfig, Orchestrator};

const HARD: &str = "Design a distributed, fault-tolerant consensus protocol and prove its safety";

fn hard_task() -> Task {
    Task::new(TaskId::new("t1"), TaskKind::Design, HARD)
}

fn config(toml: &str) -> GenesisConfig {
    toml::from_str(toml).unwrap()
}

/// One attempt at the hard task by `architect`, planned on `model`, held to `max_cost`.
fn architect_request(model: Option<&str>, max_cost: Option<genesis::core::Usd>) -> AgentRequest {
    AgentRequest {
        run_id: genesis::new_run_id(),
        subject: "anonymous".into(),
        request: "r".into(),
        task: hard_task(),
        agent: AgentId::new("architect"),
        model: model.map(ModelId::new),
        inputs: Vec::new(),
        attempt: 1,
        previous: None,
        previous_quarantined: None,
        max_cost,
    }
}

/// An LLM agent over one scripted client priced at $2.50 / $10 per million tokens,
/// with output limit `max_tokens`, answering `replies` in turn.
fn priced_agent(
    max_tokens: u32,
    replies: &[&str],
) -> (LlmAgent, Arc<genesis::llm::ScriptedClient>) {
    use genesis::core::Usd;
    use genesis::llm::{LlmClient, ModelPrice};
    let usd = |v: f64| Usd::new(v).unwrap();
    let mut client = genesis::llm::ScriptedClient::new("priced")
        .with_price(ModelPrice::new(usd(2.5), usd(10.0)))
        .with_default_max_tokens(max_tokens);
    for r in replies {
        client = client.then_text(*r);
    }
    let client = Arc::new(client);
    let providers = LlmProviders::from_clients(
        vec![Arc::clone(&client) as Arc<dyn LlmClient>],
        Default::default(),
    );
    (LlmAgent::new(providers, Default::default()), client)
}

/// Only OpenAI configured: the hard task goes to the strongest OpenAI model, priced as
/// such, never to an Anthropic model that would then run on another model.
#[test]
fn only_models_a_configured_provider_serves_are_chosen() {
    let openai_only = config(
        r#"
[llm]
agents = true
[[llm.providers]]
kind = "openai"
model = "gpt-4o-mini"
api_key = "sk-test"
"#,
    );
    let genesis = genesis::orchestrator_from_config(&openai_only, &[]).unwrap();
    let choice = genesis.selector().select(&hard_task());
    assert_eq!(choice.model.as_str(), "gpt-4o", "{}", choice.reason);
    let gpt4o = genesis.selector().catalog().get("gpt-4o").unwrap();
    assert_eq!(choice.estimated_cost, gpt4o.cost(600, 400));
    let served: Vec<&str> = genesis
        .selector()
        .catalog()
        .models()
        .iter()
        .map(|m| m.id.as_str())
        .collect();
    assert_eq!(served, ["gpt-4o-mini", "gpt-4o"]);
    let plan = genesis.plan_sync(HARD).unwrap();
    for t in &plan.tasks {
        if let Some(m) = &t.model {
            assert!(served.contains(&m.model.as_str()), "{}: {}", t.id, m.model);
        }
    }
    // No silent stand-in: a model no provider serves has no client.
    let providers = genesis.llm().unwrap();
    let err = providers
        .client(Some(&ModelId::new("claude-sonnet-4-5")))
        .err()
        .unwrap();
    assert!(matches!(err, CallError::NotServed { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "no configured llm provider serves model claude-sonnet-4-5 (rule: model_needs_provider)"
    );

    // Without any provider nothing calls a model: plans show the whole catalogue's choice.
    let none = genesis::orchestrator_from_config(&config(""), &[]).unwrap();
    assert!(none.llm().is_none());
    assert_eq!(
        none.selector().select(&hard_task()).model.as_str(),
        "claude-sonnet-4-5"
    );
    // Nor does a provider used for planning only (no LLM agents: tasks run on HTTP or
    // command agents): their estimates come from the whole catalogue, not from a model
    // that no task runs on.
    let planning_only = config(
        "[planning]\ndecomposer = \"llm\"\n[[llm.providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\n",
    );
    let planning_only = genesis::orchestrator_from_config(&planning_only, &[]).unwrap();
    assert!(planning_only.llm().is_some());
    assert_eq!(
        planning_only.selector().select(&hard_task()).model.as_str(),
        "claude-sonnet-4-5"
    );
}

/// A provider at its own address (Ollama, vLLM, a gateway) serves only its own model,
/// never the catalogue's models of its kind: an Ollama server has no `gpt-4o-mini`. Its
/// model, absent from the catalogue, is planned with the documented defaults.
#[test]
fn a_self_hosted_provider_serves_only_its_own_model() {
    let local = config(
        "[llm]\nagents = true\n[[llm.providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\n",
    );
    let genesis = genesis::orchestrator_from_config(&local, &[]).unwrap();
    let providers = genesis.llm().unwrap();
    assert!(providers.serves(&ModelId::new("llama3")));
    assert!(!providers.serves(&ModelId::new("gpt-4o-mini")));
    let served = genesis.selector().catalog().models();
    assert_eq!(served.len(), 1);
    let llama = &served[0];
    assert_eq!(llama.id.as_str(), "llama3");
    assert_eq!(
        llama.capability,
        genesis::providers::UNCATALOGUED_CAPABILITY
    );
    assert_eq!(
        llama.context_window,
        genesis::providers::UNCATALOGUED_CONTEXT_WINDOW
    );
    assert_eq!(llama.input_per_million, genesis::core::Usd::ZERO);
    let plan = genesis.plan_sync(HARD).unwrap();
    assert!(
        plan.tasks
            .iter()
            .filter_map(|t| t.model.as_ref())
            .all(|m| m.model.as_str() == "llama3")
    );

    // Beside the official API: easy work goes to the free local model, hard work to a
    // catalogue model that reaches it.
    let both = config(
        "[llm]\nagents = true\n[[llm.providers]]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key = \"k\"\n\
         [[llm.providers]]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:11434/v1\"\nmodel = \"llama3\"\n",
    );
    let genesis = genesis::orchestrator_from_config(&both, &[]).unwrap();
    let easy = Task::new(TaskId::new("t2"), TaskKind::Document, "List the files");
    let choice = genesis.selector().select(&easy);
    assert_eq!(choice.model.as_str(), "llama3", "{}", choice.reason);
    let choice = genesis.selector().select(&hard_task());
    assert_eq!(choice.model.as_str(), "gpt-4o", "{}", choice.reason);
}

#[test]
fn a_planner_model_no_provider_serves_is_a_configuration_error() {
    let mut c = config(
        "[llm]\nplanner_model = \"claude-sonnet-4-5\"\n[[llm.providers]]\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\napi_key = \"k\"\n",
    );
    c.models.catalog_file = None;
    let err = genesis::orchestrator_from_config(&c, &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("llm.planner_model claude-sonnet-4-5: no configured llm provider serves it"),
        "{err}"
    );
}

/// A task planned on a model no client serves is refused, naming the model; it is not
/// run on the planner's model.
#[tokio::test]
async fn an_llm_agent_refuses_a_model_no_provider_serves() {
    let cheap = Arc::new(genesis::llm::ScriptedClient::new("cheap").then_text("done"));
    let providers = LlmProviders::from_clients(vec![cheap], Default::default());
    let agent = LlmAgent::new(providers, Default::default());
    let request = |model: Option<&str>| architect_request(model, None);
    let err = agent
        .execute(request(Some("claude-sonnet-4-5")))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::Rejected { message, .. }
            if message == "no configured llm provider serves model claude-sonnet-4-5 (rule: model_needs_provider)"),
        "{err}"
    );
    // A task without a planned model runs on the planner's model, as before.
    let out = agent.execute(request(None)).await.unwrap();
    assert_eq!(out.text, "done");
}

/// An LLM agent on a priced model bounds its call (prompt at one token per byte plus
/// 16 per message, output up to its limit) and is held to the money set aside: the
/// call's `max_tokens` is lowered to what `max_cost` pays for, and a `max_cost` below
/// the floor is refused before any call, naming the rule.
#[tokio::test]
async fn an_llm_agent_is_held_to_the_money_set_aside() {
    use genesis::core::Usd;
    use genesis::llm::{ModelPrice, Usage};
    let usd = |v: f64| Usd::new(v).unwrap();
    let price = ModelPrice::new(usd(2.5), usd(10.0));
    let (agent, client) = priced_agent(4000, &["short", "long"]);
    let request = |max_cost: Option<Usd>| architect_request(None, max_cost);
    let bounds = agent.cost_bounds(&request(None)).unwrap();
    // Which prompt bound the bounds were computed from: the floor pays for 64 output
    // tokens, the ceiling for 4,000.
    let per_out = 10.0 / 1e6;
    let spread = bounds.ceiling.as_f64() - bounds.floor.as_f64();
    assert!(
        (spread - (4000.0 - 64.0) * per_out).abs() < 1e-12,
        "{bounds:?}"
    );
    let prompt_cost = bounds.floor.as_f64() - 64.0 * per_out;
    let prompt_tokens = (prompt_cost / (2.5 / 1e6)).round() as u64;
    assert!(prompt_tokens > 16 * 2, "{bounds:?}");
    // Half way between floor and ceiling: about 2,000 output tokens.
    let max_cost = usd((bounds.floor.as_f64() + bounds.ceiling.as_f64()) / 2.0);
    agent.execute(request(Some(max_cost))).await.unwrap();
    let sent = client.requests()[0].max_tokens.unwrap();
    let expected = price.output_tokens_within(max_cost, prompt_tokens).unwrap();
    assert_eq!(u64::from(sent), expected);
    assert!((2000..2100).contains(&sent), "{sent}");
    assert!(price.cost(&Usage::new(prompt_tokens, u64::from(sent))) <= max_cost);
    // With room for the whole limit, the client's default is left alone.
    agent.execute(request(Some(bounds.ceiling))).await.unwrap();
    assert_eq!(client.requests()[1].max_tokens, None);
    // Below the floor: refused before any call.
    let err = agent
        .execute(request(Some(usd(bounds.floor.as_f64() * 0.9))))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::Rejected { message, .. } if message.contains("rule: call_within_reservation")),
        "{err}"
    );
    assert_eq!(client.calls(), 2);
}

/// What one stub provider was asked: the `model` of every request.
#[derive(Default)]
struct Asked(Mutex<Vec<String>>);

async fn openai_chat(
    State(asked): State<Arc<Asked>>,
    Json(body): Json<serde_json::Value>,
) -> axum::response::Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    asked.0.lock().unwrap().push(model.clone());
    Json(serde_json::json!({
        "id": "x", "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "openai answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
    }))
    .into_response()
}

async fn anthropic_messages(
    State(asked): State<Arc<Asked>>,
    Json(body): Json<serde_json::Value>,
) -> axum::response::Response {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    asked.0.lock().unwrap().push(model.clone());
    Json(serde_json::json!({
        "id": "msg", "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "anthropic answer"}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 100, "output_tokens": 50}
    }))
    .into_response()
}

async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// OpenAI and Anthropic configured: every task runs on the model it was planned on,
/// through the provider of that model's kind (each stub sees only its own models).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_runs_on_its_planned_model_through_that_models_provider() {
    let openai = Arc::new(Asked::default());
    let anthropic = Arc::new(Asked::default());
    let oa = serve(
        axum::Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .with_state(Arc::clone(&openai)),
    )
    .await;
    let an = serve(
        axum::Router::new()
            .route("/v1/messages", post(anthropic_messages))
            .with_state(Arc::clone(&anthropic)),
    )
    .await;
    let c = config(&format!(
        r#"
[llm]
agents = true
[[llm.providers]]
kind = "openai"
base_url = "http://{oa}/v1"
serves_catalogue = true
model = "gpt-4o-mini"
api_key = "sk-test"
timeout = "5s"
[[llm.providers]]
kind = "anthropic"
base_url = "http://{an}"
serves_catalogue = true
model = "claude-3-5-haiku-latest"
api_key = "sk-ant-test"
timeout = "5s"
"#
    ));
    let genesis: Orchestrator = genesis::orchestrator_from_config(&c, &[]).unwrap();
    let request = format!("{HARD}, then reply to the customer thanking them");
    let plan = genesis.plan(&request).await.unwrap();
    let planned: BTreeSet<(String, String)> = plan
        .tasks
        .iter()
        .filter_map(|t| t.model.as_ref())
        .map(|m| {
            let provider = genesis
                .selector()
                .catalog()
                .get(m.model.as_str())
                .unwrap()
                .provider
                .clone();
            (provider, m.model.to_string())
        })
        .collect();
    assert!(
        planned.contains(&("anthropic".into(), "claude-sonnet-4-5".into())),
        "{planned:?}"
    );
    assert!(
        planned.iter().any(|(p, _)| p == "openai"),
        "an easy task should go to OpenAI: {planned:?}"
    );
    let result = genesis
        .execute(plan, genesis::RunOptions::default())
        .unwrap()
        .wait()
        .await;
    assert_eq!(result.status, RunStatus::Succeeded, "{:?}", result.tasks);
    let seen: BTreeSet<(String, String)> = openai
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|m| ("openai".to_owned(), m.clone()))
        .chain(
            anthropic
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|m| ("anthropic".to_owned(), m.clone())),
        )
        .collect();
    assert_eq!(seen, planned);
}

/// The reloader reads the flags file on the blocking pool: a read that blocks (here a
/// FIFO nobody writes to yet) must not stall the runtime's only worker thread.
#[cfg(target_os = "linux")]
#[test]
fn a_blocking_flags_read_does_not_stall_the_runtime() {
    let dir = crate::TempDir::new("fifo-flags");
    let path = dir.join("flags.json");
    std::fs::write(
        &path,
        r#"{"flags": [{"name": "emergency_shutdown", "enabled": false}]}"#,
    )
    .unwrap();
    let flags = genesis::flags::SharedFlags::load(path.clone()).unwrap();
    // Swap the file for a FIFO: opening it for reading blocks until a writer comes.
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());

    let (alive_tx, alive_rx) = std::sync::mpsc::channel();
    let (reloaded_tx, reloaded_rx) = std::sync::mpsc::channel();
    let watched = flags.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let handle =
                genesis::spawn_flag_reloader(watched.clone(), Duration::from_millis(10)).unwrap();
            // The first tick is immediate: the reloader is now waiting on the FIFO.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = alive_tx.send(());
            for _ in 0..250 {
                if watched
                    .snapshot()
                    .get("emergency_shutdown")
                    .is_some_and(|f| f.enabled)
                {
                    let _ = reloaded_tx.send(());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            handle.abort();
        });
        // A read may still wait on the FIFO: do not wait for it.
        rt.shutdown_background();
    });
    let alive = alive_rx.recv_timeout(Duration::from_secs(5)).is_ok();
    // Feed the FIFO (also what unblocks a stalled runtime), from a thread of its own:
    // opening for writing waits for a reader.
    let fifo = path.clone();
    std::thread::spawn(move || {
        let _ = std::fs::write(
            &fifo,
            r#"{"flags": [{"name": "emergency_shutdown", "enabled": true}]}"#,
        );
    });
    assert!(
        alive,
        "a timer did not fire while the reloader read the flags file: the read blocked the runtime"
    );
    assert!(
        reloaded_rx.recv_timeout(Duration::from_secs(5)).is_ok(),
        "the flags written to the file were not reloaded"
    );
}

/// A priced client whose output limit is below `MIN_OUTPUT_TOKENS` (64) is bounded to
/// that limit, floor and ceiling alike, and a call given the ceiling is made (review
/// R7: it was refused for wanting 64 output tokens whatever the limit, so every call
/// failed under any budget).
#[tokio::test]
async fn an_llm_agent_with_a_small_max_tokens_calls_under_a_budget() {
    use genesis::core::Usd;
    let (agent, client) = priced_agent(32, &["ok"]);
    let request = |max_cost: Option<Usd>| architect_request(None, max_cost);
    let bounds = agent.cost_bounds(&request(None)).unwrap();
    assert_eq!(
        bounds.floor, bounds.ceiling,
        "limit 32 < 64: floor == ceiling"
    );
    // The most the executor can pass (an unconstrained reserve_between reserves the
    // ceiling): the call is made, with the client's own limit.
    let result = agent.execute(request(Some(bounds.ceiling))).await;
    assert!(
        result.is_ok(),
        "refused although max_cost == ceiling: {:?}",
        result.err().map(|e| e.to_string())
    );
    assert_eq!(client.requests()[0].max_tokens, None);
}

/// Audit G10 M3: a `[backends.<id>]` whose id is no agent of the catalogue (a typo) is
/// refused at start, naming the key and the id and listing the catalogue's ids (ten at
/// most); a backend for a catalogue agent starts.
#[test]
fn a_backend_for_an_agent_not_in_the_catalogue_is_refused_at_start() {
    let backend = |id: &str| {
        config(&format!(
            "[backends.{id}]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/task\"\n"
        ))
    };
    let err = genesis::orchestrator_from_config(&backend("builderr"), &[])
        .map(|_| ())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, genesis::GenesisError::Config { .. }),
        "{err:?}"
    );
    for want in [
        "backends.builderr",
        "\"builderr\" is not an agent of the built-in catalogue",
        "\"analytics\", \"architect\", \"backend\", \"builder\"",
        "and 6 more",
        "(rule: backend_agent)",
    ] {
        assert!(text.contains(want), "{want:?} not in {text}");
    }
    // The built-in catalogue has 16 agents: ten are listed.
    assert_eq!(text.matches("\", \"").count(), 9, "{text}");
    genesis::orchestrator_from_config(&backend("builder"), &[]).unwrap();
}
