//! `genesis route` (issue #3).

use crate::support::{run_in, scratch};

const TOOLS: &str = concat!(
    "{\"id\": \"flight_search\", \"desc\": \"Search flights between airports on a date\", \"domain\": \"travel\"}\n",
    "{\"id\": \"weather_lookup\", \"desc\": \"Current weather and forecast for a city\", \"domain\": \"weather\"}\n",
    "{\"id\": \"currency_convert\", \"desc\": \"Convert an amount of money between currencies\", \"domain\": \"finance\"}\n",
);

#[test]
fn routes_jsonl_and_plain_lines_from_stdin_and_skips_bad_ones() {
    let dir = scratch("route");
    std::fs::write(dir.join("tools.jsonl"), TOOLS).unwrap();
    let input = concat!(
        "{\"step_text_masked\": \"Search flights from Paris to Rome on Friday\", \"gold_tool\": \"flight_search\"}\n",
        "What is the weather forecast for Oslo tomorrow?\n",
        "{bad json\n",
        "{\"text\": \"Convert 20 euros to dollars\", \"id\": 7}\n",
    );
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "--top-k", "2"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let agents: Vec<&str> = lines
        .iter()
        .map(|l| l["agent"].as_str().unwrap_or("-"))
        .collect();
    assert_eq!(
        agents,
        ["flight_search", "weather_lookup", "currency_convert"]
    );
    assert_eq!(
        lines
            .iter()
            .map(|l| l["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 4]
    );
    for l in &lines {
        assert!(l["score"].as_f64().unwrap() > 0.0, "{l}");
        assert!(!l["explanation"].as_str().unwrap().is_empty(), "{l}");
        let alts = l["alternatives"].as_array().unwrap();
        assert!(alts.len() <= 2, "{l}");
        assert!(alts.iter().all(|a| a["agent"] != l["agent"]), "{l}");
    }
    assert_eq!(lines[0]["gold"], "flight_search");
    assert_eq!(lines[2]["id"], 7);
    assert!(
        out.stderr.contains("line 3 skipped: invalid JSON"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("top-1 accuracy against gold labels: 1.0000 (1/1)"),
        "{}",
        out.stderr
    );

    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "--on-error", "fail"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("line 3: invalid JSON"),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stdout.lines().count(),
        2,
        "accepted lines before the bad one are kept"
    );
}

#[test]
fn examples_are_added_to_the_named_agents() {
    let dir = scratch("route-examples");
    std::fs::write(
        dir.join("agents.toml"),
        "[[agent]]\nid = \"alpha\"\ndescription = \"Writes quarterly sales reports\"\n\n\
         [[agent]]\nid = \"beta\"\ndescription = \"Books meeting rooms\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("examples.jsonl"),
        "{\"text\": \"water the ficus and the orchids\", \"agent\": \"beta\"}\n\
         {\"step_text_masked\": \"prune the hedge\", \"gold_tool\": \"beta\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("input.txt"), "Please water the ficus\n").unwrap();
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "agents.toml",
            "--examples",
            "examples.jsonl",
            "input.txt",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json_lines()[0];
    assert_eq!(d["agent"], "beta", "{d}");
    assert_eq!(d["layer"], "text", "{d}");
    assert!(out.stderr.contains("examples: 2 added"), "{}", out.stderr);

    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"text\": \"x\", \"agent\": \"gamma\"}\n",
    )
    .unwrap();
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "agents.toml",
            "--examples",
            "bad.jsonl",
            "--on-error",
            "fail",
            "input.txt",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("bad.jsonl: line 1: unknown agent \"gamma\""),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_catalogue_or_input_exits_2() {
    let dir = scratch("route-bad");
    let out = run_in(
        &dir,
        &["route", "--agents", "missing.toml", "-"],
        Some("x\n"),
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
    std::fs::write(dir.join("tools.jsonl"), TOOLS).unwrap();
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "absent.txt"],
        None,
        &[],
    );
    assert_eq!(out.code, 2);
    // Input from a file: clap exits before reading, so a pipe to stdin could break.
    std::fs::write(dir.join("in.txt"), "x\n").unwrap();
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "--top-k", "0", "in.txt"],
        None,
        &[],
    );
    assert_eq!(out.code, 2, "clap rejects --top-k 0");
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "tools.jsonl",
            "--top-k",
            "16",
            "in.txt",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 2, "a ranking holds 15 alternatives at most");
    assert!(out.stderr.contains("1..=15"), "{}", out.stderr);
}

/// A tool catalogue with an explicit catch-all (`generic`), as in audit H11.
const WITH_CATCH_ALL: &str = concat!(
    "{\"id\": \"flight_search\", \"desc\": \"Search flights between airports on a date\"}\n",
    "{\"id\": \"refund_issue\", \"desc\": \"Issue a refund for a customer order\"}\n",
    "{\"id\": \"jira_create\", \"desc\": \"Create a Jira ticket\", \"kinds\": [\"generic\"]}\n",
);

/// Audit H11 H2 and L5: empty and blank lines (plain or JSON) are malformed lines,
/// named and skipped or fatal per --on-error; a description with no words (emoji) is
/// unassigned with the reason, not given to the catch-all; `{"text": 123}` says the
/// field is not a string.
#[test]
fn empty_lines_are_malformed_and_wordless_tasks_unassigned() {
    let dir = scratch("route-odd");
    std::fs::write(dir.join("tools.jsonl"), WITH_CATCH_ALL).unwrap();
    let input = concat!(
        "Search flights from Paris to Rome\n",
        "\n",
        "   \n",
        "{\"text\": \"  \"}\n",
        "{\"text\": \"🚀🔥💯 🎉🎉\"}\n",
        "{\"text\": 123}\n",
        "xqzv blorf wibble\n",
    );
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    let got: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["agent"].as_str().unwrap_or("-"),
                l["layer"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "flight_search", "text"),
            (5, "-", "unassigned"),
            (7, "jira_create", "capability"),
        ]
    );
    assert!(
        lines[1]["explanation"]
            .as_str()
            .unwrap()
            .contains("no words to match"),
        "{}",
        lines[1]
    );
    for line in [2, 3] {
        assert!(
            out.stderr.contains(&format!(
                "line {line} skipped: empty line: no task description"
            )),
            "{}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .contains("line 4 skipped: the task text is empty"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("line 6 skipped: field \"text\" is not a string (got a number)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("routed 3 tasks: 1 unassigned, 4 lines skipped"),
        "{}",
        out.stderr
    );
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "--on-error", "fail"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("stdin: line 2: empty line"),
        "{}",
        out.stderr
    );
}

/// Audit H11 H1: a JSONL line's `metadata` object reaches the task, so rules with
/// metadata conditions can be tried from the CLI; a value that is not a string is a
/// malformed line naming the field.
#[test]
fn metadata_of_input_lines_reaches_rules() {
    let dir = scratch("route-metadata");
    std::fs::write(dir.join("tools.jsonl"), WITH_CATCH_ALL).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        "[[rule]]\nname = \"payments-team\"\npriority = 80\nagent = \"jira_create\"\n\
         metadata = { team = \"payments\" }\n",
    )
    .unwrap();
    let input = concat!(
        "{\"text\": \"Refund order 12 for the customer\", \"metadata\": {\"team\": \"payments\"}}\n",
        "{\"text\": \"Refund order 12 for the customer\"}\n",
        "{\"text\": \"Refund order 12\", \"metadata\": {\"team\": 7}}\n",
        "{\"text\": \"Refund order 12\", \"metadata\": \"payments\"}\n",
    );
    let out = run_in(
        &dir,
        &["route", "--agents", "tools.jsonl", "--rules", "rules.toml"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert_eq!(lines[0]["layer"], "rule", "{}", lines[0]);
    assert_eq!(lines[0]["agent"], "jira_create");
    assert!(
        lines[0]["explanation"]
            .as_str()
            .unwrap()
            .contains("rule \"payments-team\" matched (metadata team=payments)"),
        "{}",
        lines[0]
    );
    assert_eq!(lines[1]["agent"], "refund_issue", "{}", lines[1]);
    assert!(
        out.stderr
            .contains("line 3 skipped: field \"metadata.team\" is not a string (got a number)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("line 4 skipped: field \"metadata\" is not an object (got a string)"),
        "{}",
        out.stderr
    );
}

/// Audit H11 M2, M3, M4, L5: --catalogue-errors skip skips bad agents of the --agents
/// file (each warned with the file, line and reason; none left is fatal, with the first
/// reason); by default a bad agent fails the load, as on the server (verification V11);
/// the configured catalogue follows `routing.catalogue_errors`; a byte-order mark opens
/// catalogue, examples and input; a JSONL file named .json says so; a catalogue that is
/// not UTF-8 names the line.
#[test]
fn catalogue_errors_follow_the_flag_and_odd_files_are_named() {
    let dir = scratch("route-catalogue");
    let bad = format!(
        "{}{{\"id\": \"broken\", \"desc\": \"x\", \"success_rate\": 1.5}}\nnot json\n",
        WITH_CATCH_ALL
    );
    std::fs::write(dir.join("bad.jsonl"), &bad).unwrap();
    let input = "Search flights from Paris to Rome\n";
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "bad.jsonl",
            "--catalogue-errors",
            "skip",
        ],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json_lines()[0]["agent"], "flight_search");
    for (line, reason) in [(4, "success_rate 1.5"), (5, "expected ident")] {
        let warning = format!("warning: bad.jsonl: line {line} skipped: ");
        assert_eq!(out.stderr.matches(&warning).count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(reason), "{}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("agents: 3 loaded from bad.jsonl (2 skipped)"),
        "{}",
        out.stderr
    );
    // Without the flag (and with --on-error skip, which is for input lines) a bad
    // agent fails the load.
    for args in [
        &["route", "--agents", "bad.jsonl"][..],
        &["route", "--agents", "bad.jsonl", "--on-error", "skip"][..],
        &[
            "route",
            "--agents",
            "bad.jsonl",
            "--catalogue-errors",
            "fail",
        ][..],
    ] {
        let out = run_in(&dir, args, Some(input), &[]);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr
                .contains("--agents bad.jsonl: agents jsonl line 4 is invalid"),
            "{}",
            out.stderr
        );
    }
    // Every agent skipped: fatal, with the first bad agent's reason (V11 M-1).
    std::fs::write(dir.join("none.jsonl"), "not json\n{\"id\": \"x\"}\n").unwrap();
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "none.jsonl",
            "--catalogue-errors",
            "skip",
        ],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "catalogue is empty: every agent was skipped; the first: agents jsonl line 1"
        ),
        "{}",
        out.stderr
    );

    // The configured catalogue follows routing.catalogue_errors (default "fail").
    for (mode, code) in [("skip", 0), ("fail", 2)] {
        std::fs::write(
            dir.join("genesis.toml"),
            format!(
                "[routing]\nagents_file = \"bad.jsonl\"\nrules_file = \"\"\n\
                 catalogue_errors = \"{mode}\"\n"
            ),
        )
        .unwrap();
        let out = run_in(
            &dir,
            &["--config", "genesis.toml", "route"],
            Some(input),
            &[],
        );
        assert_eq!(out.code, code, "{mode}: {}", out.stderr);
    }

    // A byte-order mark opens the catalogue, the examples and the input.
    std::fs::write(dir.join("bom.jsonl"), format!("\u{feff}{WITH_CATCH_ALL}")).unwrap();
    std::fs::write(
        dir.join("examples.jsonl"),
        "\u{feff}{\"text\": \"water the ficus\", \"agent\": \"jira_create\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("in.jsonl"),
        "\u{feff}{\"text\": \"Search flights from Paris to Rome\", \"id\": 1}\n",
    )
    .unwrap();
    let out = run_in(
        &dir,
        &[
            "route",
            "--agents",
            "bom.jsonl",
            "--examples",
            "examples.jsonl",
            "--on-error",
            "fail",
            "in.jsonl",
        ],
        None,
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.json_lines()[0];
    assert_eq!(
        (d["id"].as_u64(), d["agent"].as_str()),
        (Some(1), Some("flight_search")),
        "{d}"
    );
    assert!(out.stderr.contains("examples: 1 added"), "{}", out.stderr);

    // JSONL named .json.
    std::fs::write(dir.join("tools.json"), WITH_CATCH_ALL).unwrap();
    let out = run_in(&dir, &["route", "--agents", "tools.json"], Some(input), &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("one JSON object per line, which is JSONL"),
        "{}",
        out.stderr
    );
    // Not UTF-8: the line is named.
    let mut bytes = WITH_CATCH_ALL.as_bytes().to_vec();
    bytes.extend_from_slice(b"{\"id\": \"x\", \"desc\": \"caf\xe9\"}\n");
    std::fs::write(dir.join("latin1.jsonl"), bytes).unwrap();
    let out = run_in(
        &dir,
        &["route", "--agents", "latin1.jsonl"],
        Some(input),
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("not valid UTF-8 at line 4"),
        "{}",
        out.stderr
    );
}

/// The help says what --on-error and --catalogue-errors cover, and what the input may
/// carry.
#[test]
fn route_help_names_what_on_error_and_metadata_cover() {
    let dir = scratch("route-help");
    let out = run_in(&dir, &["route", "--help"], None, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let help = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in [
        "malformed input or examples line",
        "bad agent of the catalogue (--agents or `routing.agents_file`",
        "`metadata`: an object of string values",
        "An empty or blank line is a malformed line",
        "not what a server has learned",
        "routing.catalogue_errors",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}
