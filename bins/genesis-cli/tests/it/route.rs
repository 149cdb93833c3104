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
