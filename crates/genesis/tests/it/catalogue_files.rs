//! Catalogue files named by the configuration (audit G10 M1): rules that do not fit a
//! catalogue of one's own are refused naming both files and the way out, and
//! `rules_file = ""` routes with no rules.

use genesis::GenesisConfig;
use genesis::core::{Task, TaskId, TaskKind};

use crate::TempDir;

const AGENTS: &str = r#"
[[agent]]
id = "coder"
description = "Writes and fixes code"
kinds = ["implement"]

[[agent]]
id = "reviewer"
description = "Reviews code and documents"
kinds = ["test", "document"]
"#;

/// A configuration whose routing section is `routing` (TOML lines), loaded from a file.
fn config(dir: &TempDir, routing: &str) -> GenesisConfig {
    let p = dir.join("genesis.toml");
    std::fs::write(&p, format!("[routing]\n{routing}\n")).unwrap();
    GenesisConfig::load(&[p], Vec::new()).unwrap()
}

#[test]
fn rules_naming_agents_the_catalogue_lacks_are_refused_naming_both_files() {
    let dir = TempDir::new("catalogue-rules");
    let agents = dir.join("agents.toml");
    std::fs::write(&agents, AGENTS).unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, genesis::defaults::ROUTING_RULES_TOML).unwrap();
    let c = config(
        &dir,
        &format!(
            "agents_file = {:?}\nrules_file = {:?}",
            agents.display().to_string(),
            rules.display().to_string()
        ),
    );
    let Err(err) = genesis::orchestrator_from_config(&c, &[]) else {
        panic!("the shipped rules name agents this catalogue lacks");
    };
    let text = err.to_string();
    assert!(
        text.contains(&format!("routing.rules_file {}", rules.display()))
            && text.contains(&format!("routing.agents_file {}", agents.display()))
            && text.contains("names unknown agent")
            && text.contains("rules_file = \"\""),
        "{text}"
    );
}

#[test]
fn an_empty_rules_file_setting_routes_with_no_rules() {
    let dir = TempDir::new("catalogue-no-rules");
    let agents = dir.join("agents.toml");
    std::fs::write(&agents, AGENTS).unwrap();
    let c = config(
        &dir,
        &format!(
            "agents_file = {:?}\nrules_file = \"\"",
            agents.display().to_string()
        ),
    );
    let genesis = genesis::orchestrator_from_config(&c, &[]).unwrap();
    assert!(genesis.router().rules().is_empty());
    let task = Task::new(
        TaskId::new("t1"),
        TaskKind::Implement,
        "Fix the parser crash",
    );
    let d = genesis.router().route(&task);
    assert_eq!(d.agent.as_ref().map(|a| a.as_str()), Some("coder"), "{d:?}");
    // With the built-in catalogue too: no rules.
    let c = config(&dir, "rules_file = \"\"");
    let genesis = genesis::orchestrator_from_config(&c, &[]).unwrap();
    assert!(genesis.router().rules().is_empty());
}
