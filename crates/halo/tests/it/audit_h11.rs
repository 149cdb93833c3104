//! Audit H11: odd tasks and catalogues (issue #3).

use genesis_core::{Task, TaskId, TaskKind};
use genesis_halo::{
    AgentRegistry, HaloError, JsonlMode, RouteLayer, Router, RouterConfig, RoutingRules,
};

/// A catalogue with an explicit catch-all (`generic`) and an agent of kind deploy.
const CATALOGUE: &str = "[[agent]]\nid = \"tickets\"\ndescription = \"Creates Jira tickets for bugs\"\n\
    task_kinds = [\"generic\"]\n\n\
    [[agent]]\nid = \"deployer\"\ndescription = \"Deploys services to production\"\n\
    task_kinds = [\"deploy\"]\n";

fn task(kind: TaskKind, description: &str) -> Task {
    Task::new(TaskId::new("t"), kind, description)
}

/// The error and its sources, as the CLI prints them.
fn chain(e: &HaloError) -> String {
    genesis_core::error_chain(e)
}

/// H2: a description the tokenizer keeps no word of (empty, blank, only symbols or
/// emoji, only stop words) went to the agent listing `generic` (or the task's kind)
/// through the capability fallback. It is unassigned with the reason, on every path
/// (route, cached route, top-k, plan), unless a rule takes it; a text with words
/// nobody matches still goes to the opt-in catch-all.
#[test]
fn descriptions_without_words_are_unassigned_unless_a_rule_takes_them() {
    let rules = RoutingRules::from_toml_str(
        "[[rule]]\nname = \"deploys\"\npriority = 5\nagent = \"deployer\"\n\
         kinds = [\"deploy\"]\nmetadata = { team = \"ops\" }\n",
    )
    .unwrap();
    for cache_capacity in [0, 1024] {
        let config = RouterConfig {
            cache_capacity,
            ..RouterConfig::default()
        };
        let router = Router::with_config(
            AgentRegistry::from_toml_str(CATALOGUE).unwrap(),
            rules.clone(),
            config,
        )
        .unwrap();
        for text in ["", "   ", "\t\n", "🚀🔥💯 🎉🎉", "?!… ---", "the of and"] {
            for kind in [TaskKind::Generic, TaskKind::Deploy] {
                for _ in 0..2 {
                    // twice: the second may come from the cache
                    let d = router.route(&task(kind, text));
                    assert_eq!(d.layer, RouteLayer::Unassigned, "{text:?} {kind:?}: {d:?}");
                    assert!(d.agent.is_none());
                    assert!(
                        d.explanation
                            .contains("the description has no words to match")
                            && d.explanation.contains("(rule: description_words)")
                            && d.explanation.contains("no rule matched"),
                        "{}",
                        d.explanation
                    );
                }
                let top = router.route_top_k(&task(kind, text), 3).unwrap();
                assert!(top.is_empty(), "{text:?}: {top:?}");
            }
            let plan = router.route_all(&[
                task(TaskKind::Generic, "Create a Jira ticket for the login bug"),
                Task::new(TaskId::new("odd"), TaskKind::Generic, text),
            ]);
            assert_eq!(plan.unassigned_count(), 1, "{text:?}: {plan:?}");
            assert_eq!(plan.unassigned[0].task_id.as_str(), "odd");
            assert!(plan.unassigned[0].reason.contains("no words to match"));
            // A rule still routes it (here on kind and metadata).
            let mut t = task(TaskKind::Deploy, text);
            t.metadata.insert("team".into(), "ops".into());
            let d = router.route(&t);
            assert_eq!(d.layer, RouteLayer::Rule, "{text:?}: {d:?}");
            assert_eq!(d.agent.as_ref().map(|a| a.as_str()), Some("deployer"));
        }
        // Words nobody's description has: the opt-in catch-all takes a generic task.
        let d = router.route(&task(TaskKind::Generic, "xqzv blorf wibble"));
        assert_eq!(d.layer, RouteLayer::Capability, "{d:?}");
        assert_eq!(d.agent.as_ref().map(|a| a.as_str()), Some("tickets"));
        let d = router.route(&task(TaskKind::Generic, "帮我预订明天的高铁票"));
        assert_eq!(d.agent.as_ref().map(|a| a.as_str()), Some("tickets"));
    }
}

/// M2: the records a JSONL catalogue takes (UltraTool's `desc` + `domain`, fields of
/// their own) load from a JSON array, bare or wrapped, as the same registry; the
/// misspelt-field check applies too. A JSONL file named .json says so.
#[test]
fn json_takes_the_same_records_as_jsonl() {
    let lines = [
        r#"{"id":"flights","desc":"Search flights","domain":"Travel","old_desc":"x","parameters":{"q":1}}"#,
        r#"{"id":"weather","desc":"Weather forecast","tags":["weather"],"kinds":["research"]}"#,
    ];
    let jsonl = AgentRegistry::from_jsonl_str(&lines.join("\n"), JsonlMode::Fail)
        .unwrap()
        .0;
    let bare = AgentRegistry::from_json_str(&format!("[\n{}\n]", lines.join(",\n"))).unwrap();
    let wrapped =
        AgentRegistry::from_json_str(&format!("{{\"agents\": [{}]}}", lines.join(","))).unwrap();
    assert_eq!(bare, jsonl);
    assert_eq!(wrapped, jsonl);
    assert_eq!(bare.get("flights").unwrap().skills, ["Travel"]);

    let typo = "[\n  {\"id\":\"a\",\"desc\":\"x\"},\n  {\"id\":\"b\",\"desc\":\"y\",\"task_kind\":[\"deploy\"]}\n]";
    let e = AgentRegistry::from_json_str(typo).unwrap_err();
    assert_eq!(
        chain(&e),
        "agents json agent 2 (line 3) is invalid: field \"task_kind\" is not a catalogue \
         field; did you mean \"task_kinds\"? (rule: catalogue_field)"
    );
    let e = AgentRegistry::from_json_str("[{\"id\":\"a\"}]").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("agents json agent 1 (line 1) is invalid: missing field"),
        "{e}"
    );

    let e = AgentRegistry::from_json_str(&lines.join("\n")).unwrap_err();
    assert!(matches!(e, HaloError::JsonlInJson), "{e:?}");
    assert!(e.to_string().contains("JSONL"), "{e}");
    // One agent object is not a catalogue: the error says what one is (V11 L-3).
    let e = AgentRegistry::from_json_str(lines[0]).unwrap_err();
    assert!(matches!(e, HaloError::AgentsJson { .. }), "{e:?}");
    assert!(
        chain(&e).contains("the file is one agent object; a JSON catalogue is an array"),
        "{}",
        chain(&e)
    );
    // Another object without `agents` is still the parser's own error.
    let e = AgentRegistry::from_json_str("{\"tools\": []}").unwrap_err();
    assert!(
        chain(&e).contains("missing field `agents`"),
        "{}",
        chain(&e)
    );
}

/// M3: a byte-order mark opens the catalogue in every format, and the rules file.
#[test]
fn a_byte_order_mark_is_skipped_in_every_catalogue_format() {
    let line = r#"{"id":"a","desc":"x"}"#;
    let (jsonl, _) =
        AgentRegistry::from_jsonl_str(&format!("\u{feff}{line}\n"), JsonlMode::Fail).unwrap();
    let json = AgentRegistry::from_json_str(&format!("\u{feff}[{line}]")).unwrap();
    let wrapped =
        AgentRegistry::from_json_str(&format!("\u{feff}{{\"agents\":[{line}]}}")).unwrap();
    let toml =
        AgentRegistry::from_toml_str("\u{feff}[[agent]]\nid = \"a\"\ndesc = \"x\"\n").unwrap();
    assert_eq!(json, jsonl);
    assert_eq!(wrapped, jsonl);
    assert_eq!(toml, jsonl);
    let rules = RoutingRules::from_toml_str(
        "\u{feff}[[rule]]\nname = \"r\"\npriority = 1\nagent = \"a\"\nkeywords = [\"x\"]\n",
    )
    .unwrap();
    assert_eq!(rules.len(), 1);
}

/// M4: skip mode for TOML and JSON catalogues, as JSONL has: bad agents come back
/// with their line and reason, the others load; no agent left, a repeated id or a
/// document that does not parse still fail.
#[test]
fn toml_and_json_catalogues_skip_bad_agents_in_skip_mode() {
    let toml = "[[agent]]\nid = \"a\"\ndescription = \"x\"\n\n\
                [[agent]]\nid = \"b\"\ndescription = \"y\"\nsuccess_rate = 1.5\n\n\
                [[agent]]\nid = \"c\"\ndescription = \"z\"\ntask_kind = [\"deploy\"]\n\n\
                [[agent]]\nid = \"d\"\ndescription = \"w\"\n";
    let (reg, skipped) = AgentRegistry::from_toml_str_with(toml, JsonlMode::Skip).unwrap();
    assert_eq!(
        reg.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["a", "d"]
    );
    assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [5, 10]);
    assert!(
        skipped[0]
            .message
            .contains("agent 2: agent \"b\" success_rate 1.5"),
        "{skipped:?}"
    );
    assert!(skipped[1].message.contains("task_kind"), "{skipped:?}");
    let e = AgentRegistry::from_toml_str_with(toml, JsonlMode::Fail).unwrap_err();
    assert!(
        matches!(e, HaloError::AgentsToml { line: Some(13), .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("task_kind"), "{e}");

    let json = "[\n{\"id\":\"a\",\"desc\":\"x\"},\n{\"id\":\"b\",\"desc\":\"\"},\n7,\n{\"id\":\"d\",\"desc\":\"w\"}\n]";
    let (reg, skipped) = AgentRegistry::from_json_str_with(json, JsonlMode::Skip).unwrap();
    assert_eq!(reg.len(), 2);
    assert_eq!(skipped.iter().map(|s| s.line).collect::<Vec<_>>(), [3, 4]);
    assert!(
        skipped[0]
            .message
            .starts_with("agent 2: agent \"b\" has an empty description"),
        "{skipped:?}"
    );
    let e = AgentRegistry::from_json_str(json).unwrap_err();
    assert_eq!(
        chain(&e),
        "agents json agent 2 (line 3) is invalid: agent \"b\" has an empty description"
    );

    assert!(matches!(
        AgentRegistry::from_toml_str_with(
            "[[agent]]\nid = \"b\"\ndescription = \"\"\n",
            JsonlMode::Skip
        ),
        Err(HaloError::EmptyCatalogue)
    ));
    assert!(matches!(
        AgentRegistry::from_json_str_with("[{\"id\":\"b\"}]", JsonlMode::Skip),
        Err(HaloError::EmptyCatalogue)
    ));
    assert!(matches!(
        AgentRegistry::from_toml_str_with("[[agent]\n", JsonlMode::Skip),
        Err(HaloError::AgentsToml { .. })
    ));
}

/// L5: a repeated id names both agents, in every format.
#[test]
fn repeated_ids_name_both_positions() {
    let toml = "[[agent]]\nid='a'\ndescription='x'\n[[agent]]\nid='b'\ndescription='y'\n\
                [[agent]]\nid='a'\ndescription='z'\n";
    let e = AgentRegistry::from_toml_str(toml).unwrap_err();
    assert_eq!(
        e.to_string(),
        "duplicate agent id \"a\": agents 1 and 3 of the catalogue"
    );
    let e = AgentRegistry::from_toml_str_with(toml, JsonlMode::Skip).unwrap_err();
    assert_eq!(
        chain(&e),
        "agents toml agent 3 (line 7) is invalid: duplicate agent id \"a\", first on line 1"
    );
    let json = "[{\"id\":\"a\",\"desc\":\"x\"},\n{\"id\":\"a\",\"desc\":\"y\"}]";
    for mode in [JsonlMode::Skip, JsonlMode::Fail] {
        let e = AgentRegistry::from_json_str_with(json, mode).unwrap_err();
        assert_eq!(
            chain(&e),
            "agents json agent 2 (line 2) is invalid: duplicate agent id \"a\", first on line 1"
        );
    }
}

/// M1: one agent with a 5 MB description took nearly half the tasks. A description over
/// 64 KiB is refused (skipped in skip mode), naming the agent, the size and the rule; a
/// 64 KiB one is taken.
#[test]
fn a_description_of_megabytes_is_refused() {
    let words: String = (0..20_000).map(|i| format!("word{i} ")).collect();
    assert!(words.len() > genesis_halo::MAX_DESCRIPTION_BYTES);
    let line = |id: &str, desc: &str| serde_json::json!({"id": id, "desc": desc}).to_string();
    let fine = "x".repeat(genesis_halo::MAX_DESCRIPTION_BYTES);
    let text = [
        line("flights", "Search flights"),
        line("everything", &words),
        line("long_but_fine", &fine),
    ]
    .join("\n");
    let e = AgentRegistry::from_jsonl_str(&text, JsonlMode::Fail).unwrap_err();
    let message = chain(&e);
    assert!(
        message.contains("line 2")
            && message.contains(&format!(
                "agent \"everything\" has a description of {} bytes, above 65536 (rule: description_bytes)",
                words.len()
            )),
        "{message}"
    );
    let (registry, skipped) = AgentRegistry::from_jsonl_str(&text, JsonlMode::Skip).unwrap();
    assert_eq!(registry.len(), 2);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].line, 2);
}
