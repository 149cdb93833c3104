//! Model selection: the cheapest capable model by the selector's own cost estimate,
//! among the models whose context window holds the task.

use genesis_core::{Task, TaskId, TaskKind};
use genesis_daao::{CatalogError, ModelCatalog, ModelSelector, split_tokens};
use proptest::prelude::*;

/// Two equally capable models: one cheap on input, one cheap on output.
const SKEWED: &str = r#"
[[model]]
id = "output-heavy"
provider = "openai"
capability = 1.0
input_per_million = 0.5
output_per_million = 10.0
[[model]]
id = "input-heavy"
provider = "openai"
capability = 1.0
input_per_million = 3.6
output_per_million = 1.0
"#;

/// Equally capable models with 128k and 1M windows; the small window is cheaper.
const WINDOWS: &str = r#"
[[model]]
id = "small-ctx"
provider = "openai"
capability = 1.0
input_per_million = 0.1
output_per_million = 0.1
context_window = 128000
[[model]]
id = "big-ctx"
provider = "anthropic"
capability = 1.0
input_per_million = 1.0
output_per_million = 1.0
context_window = 1000000
"#;

fn task(tokens: u32) -> Task {
    Task::new(TaskId::new("t1"), TaskKind::Support, "Reply to a customer")
        .with_estimated_tokens(tokens)
}

#[test]
fn the_choice_is_the_cheapest_by_the_estimate_it_reports() {
    let selector = ModelSelector::new(ModelCatalog::from_toml_str(SKEWED).unwrap());
    let chosen = selector.select(&task(100_000));
    // 60k input + 40k output: input-heavy $0.256, output-heavy $0.43.
    assert_eq!(chosen.model.as_str(), "input-heavy", "{}", chosen.reason);
    let other = selector
        .catalog()
        .get("output-heavy")
        .unwrap()
        .cost(60_000, 40_000);
    assert!((chosen.estimated_cost.as_f64() - 0.256).abs() < 1e-9);
    assert!((other.as_f64() - 0.43).abs() < 1e-9);
    // The catalogue's "cheapest" is by the same estimate.
    let catalog = ModelCatalog::from_toml_str(SKEWED).unwrap();
    assert_eq!(catalog.cheapest().id.as_str(), "input-heavy");
    assert_eq!(split_tokens(100_000), (60_000, 40_000));
}

#[test]
fn a_task_goes_to_a_model_whose_context_window_holds_it() {
    let selector = ModelSelector::new(ModelCatalog::from_toml_str(WINDOWS).unwrap());
    let big = selector.select(&task(150_000));
    assert_eq!(big.model.as_str(), "big-ctx", "{}", big.reason);
    assert!(
        big.reason
            .contains("; 1 model(s) skipped: context window under 150000 tokens; difficulty: "),
        "{}",
        big.reason
    );
    // A window exactly the task's size holds it.
    let exact = selector.select(&task(128_000));
    assert_eq!(exact.model.as_str(), "small-ctx", "{}", exact.reason);
    assert!(!exact.reason.contains("skipped"), "{}", exact.reason);
    // Cost routing off: the strongest model that fits, not merely the strongest.
    let strongest = selector.select_strongest(&task(150_000), "flag off");
    assert_eq!(strongest.model.as_str(), "big-ctx", "{}", strongest.reason);
}

#[test]
fn when_no_window_holds_the_task_the_reason_names_the_rule_and_the_numbers() {
    let selector = ModelSelector::new(ModelCatalog::from_toml_str(WINDOWS).unwrap());
    let choice = selector.select(&task(2_000_000));
    assert_eq!(choice.model.as_str(), "big-ctx");
    assert!(
        choice.reason.starts_with(
            "no model's context window holds the task's 2000000 tokens (rule: context_window); \
             largest window 1000000 tokens; cheapest model with capability 1.00"
        ),
        "{}",
        choice.reason
    );
    let strongest = selector.select_strongest(&task(2_000_000), "flag off");
    assert_eq!(strongest.model.as_str(), "big-ctx");
    assert!(
        strongest.reason.starts_with(
            "no model's context window holds the task's 2000000 tokens (rule: context_window)"
        ),
        "{}",
        strongest.reason
    );
}

#[test]
fn a_window_that_fits_wins_over_capability_the_task_cannot_use() {
    // The strong model's window is too small: the weaker model that fits is chosen,
    // and the reason says no fitting model reaches the difficulty.
    let catalog = ModelCatalog::from_toml_str(
        r#"
[[model]]
id = "weak-long"
provider = "anthropic"
capability = 0.3
input_per_million = 1.0
output_per_million = 1.0
context_window = 500000
[[model]]
id = "strong-short"
provider = "openai"
capability = 1.0
input_per_million = 1.0
output_per_million = 1.0
context_window = 8000
"#,
    )
    .unwrap();
    let selector = ModelSelector::new(catalog);
    let hard = Task::new(
        TaskId::new("t1"),
        TaskKind::Design,
        "Design a distributed, fault-tolerant consensus protocol and prove its safety",
    )
    .with_estimated_tokens(20_000);
    let choice = selector.select(&hard);
    assert_eq!(choice.model.as_str(), "weak-long", "{}", choice.reason);
    assert!(
        choice.reason.starts_with("no model reaches difficulty"),
        "{}",
        choice.reason
    );
}

#[test]
fn catalogue_rules() {
    let zero = "[[model]]\nid = \"a\"\nprovider = \"x\"\ncapability = 0.5\ninput_per_million = 1.0\noutput_per_million = 1.0\ncontext_window = 0\n";
    let err = ModelCatalog::from_toml_str(zero).unwrap_err();
    assert!(matches!(err, CatalogError::ContextWindow { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "model a has context_window 0, no task fits (rule: context_window_positive)"
    );
    let catalog = ModelCatalog::from_toml_str(WINDOWS).unwrap();
    let anthropic = catalog.filtered(|m| m.provider == "anthropic").unwrap();
    let ids: Vec<&str> = anthropic.models().iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["big-ctx"]);
    assert!(matches!(
        catalog.filtered(|m| m.provider == "mistral"),
        Err(CatalogError::Empty)
    ));
}

fn spec(i: usize, cap: f64, input: f64, output: f64, window: u32) -> String {
    format!(
        "[[model]]\nid = \"m{i}\"\nprovider = \"openai\"\ncapability = {cap}\n\
         input_per_million = {input}\noutput_per_million = {output}\ncontext_window = {window}\n"
    )
}

proptest! {
    /// Whatever the catalogue and the task: the chosen model fits when any model does,
    /// and no fitting model that covers the difficulty is cheaper by the estimate.
    #[test]
    fn no_fitting_capable_model_is_cheaper_than_the_choice(
        models in proptest::collection::vec(
            (0.0f64..=1.0, 0.0f64..50.0, 0.0f64..50.0, 1_000u32..400_000),
            1..8,
        ),
        tokens in 0u32..500_000,
        difficulty in 0.0f64..=1.0,
    ) {
        let text: String = models
            .iter()
            .enumerate()
            .map(|(i, &(c, a, b, w))| spec(i, c, a, b, w))
            .collect();
        let selector = ModelSelector::new(ModelCatalog::from_toml_str(&text).unwrap());
        let t = task(tokens);
        let choice = selector.select_for(&t, difficulty);
        let chosen = selector.catalog().get(choice.model.as_str()).unwrap();
        let (input, output) = split_tokens(u64::from(tokens));
        prop_assert_eq!(choice.estimated_cost, chosen.cost(input, output));
        let any_fits = selector.catalog().models().iter().any(|m| m.fits(u64::from(tokens)));
        prop_assert_eq!(chosen.fits(u64::from(tokens)), any_fits, "{}", choice.reason);
        let need = (difficulty + 0.05).min(1.0);
        if chosen.capability >= need {
            for m in selector.catalog().models() {
                if m.fits(u64::from(tokens)) && m.capability >= need {
                    prop_assert!(
                        choice.estimated_cost <= m.cost(input, output),
                        "{} at {} but {} at {}",
                        choice.model, choice.estimated_cost, m.id, m.cost(input, output)
                    );
                }
            }
        }
    }
}

#[test]
fn catalogue_parse_errors_name_the_key_and_value_once() {
    let negative = "[[model]]\nid = \"m\"\nprovider = \"openai\"\ncapability = 0.5\ninput_per_million = -1.0\noutput_per_million = 1.0\n";
    let e = ModelCatalog::from_toml_str(negative).unwrap_err();
    let message = e.to_string();
    assert!(
        message.starts_with("invalid model catalogue: "),
        "{message}"
    );
    assert!(message.contains("-1"), "names the value: {message}");
    assert!(
        message.contains("at line 5 column 21"),
        "names the place: {message}"
    );
    assert!(!message.contains('\n'), "one line: {message:?}");
    // Shown once by a chain printer.
    assert_eq!(
        genesis_core::error_chain(&e).matches("at line 5").count(),
        1
    );

    let unknown = negative.replace(
        "input_per_million = -1.0",
        "input_per_million = 1.0\nspeed = 3",
    );
    let e = ModelCatalog::from_toml_str(&unknown).unwrap_err();
    assert!(e.to_string().contains("unknown field `speed`"), "{e}");
}
