//! Loading configuration and building the orchestrator, shared by every command.

use std::path::Path;

use genesis::{GenesisConfig, GenesisError, Orchestrator};

/// A command failure: the one-line reason and the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

impl From<GenesisError> for Failure {
    fn from(e: GenesisError) -> Self {
        Failure {
            message: one_line(&e),
            code: u8::try_from(e.exit_code()).unwrap_or(1),
        }
    }
}

impl Failure {
    /// Rejected input (exit code 2).
    pub(crate) fn rejected(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    /// Internal or environment error (exit code 1).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// The error and its sources on one line. A TOML parser's source diagram (the quoted
/// line under `|` with a caret) is left out: the message already names the line and
/// column, and squashed onto one line the diagram was unreadable (audit C10 #18).
pub(crate) fn one_line(e: &dyn std::error::Error) -> String {
    let chain = genesis::core::error_chain(e);
    let diagram = |l: &str| {
        let t = l.trim_start();
        let t = t
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        t.starts_with('|')
    };
    let mut out = String::with_capacity(chain.len());
    for line in chain
        .lines()
        .filter(|l| !diagram(l) && !l.trim().is_empty())
    {
        if !out.is_empty() {
            out.push_str(if out.ends_with(':') { " " } else { ": " });
        }
        out.push_str(line.trim());
    }
    out
}

/// A configuration that did not load or does not build: the operator's input, so exit
/// code 2 (a missing or malformed `--config` file, an invalid value, a bad catalogue or
/// rules file). Only a runtime that cannot start is exit code 1.
pub(crate) fn config_failure(e: GenesisError) -> Failure {
    let code = if matches!(e, GenesisError::NoRuntime { .. }) {
        1
    } else {
        2
    };
    Failure {
        message: one_line(&e),
        code,
    }
}

/// Loads `config/genesis.toml` when present, then the `extra` files in order (a later
/// file's keys win), then `GENESIS_*` variables, and warns on stderr about `GENESIS_*`
/// variables that set nothing (typos). A configuration that does not load is exit code 2.
pub(crate) fn load_config(extra: &[&Path]) -> Result<GenesisConfig, Failure> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let config =
        GenesisConfig::load_layered_all(extra, env.iter().cloned()).map_err(config_failure)?;
    for warning in unknown_variable_warnings(&config, &env) {
        eprintln!("warning: {warning}");
    }
    Ok(config)
}

/// One warning per `GENESIS_*` variable of `env` that is neither a configuration key,
/// a variable the binaries read, nor a feature flag of `config`'s flags file.
pub(crate) fn unknown_variable_warnings(
    config: &GenesisConfig,
    env: &[(String, String)],
) -> Vec<String> {
    let flags: Vec<String> = genesis::load_flags(config, &[])
        .map(|f| f.snapshot().flags().map(|f| f.name.clone()).collect())
        .unwrap_or_default();
    GenesisConfig::unknown_env_variables(env, &flags)
        .into_iter()
        .map(|var| {
            format!(
                "environment variable {var} is ignored: it is not a configuration key \
                 (GENESIS_<SECTION>__<KEY>, e.g. GENESIS_SERVER__BIND), a variable genesis \
                 reads ({}) or a feature flag",
                genesis::config::NON_CONFIG_VARIABLES.join(", ")
            )
        })
        .collect()
}

/// Builds the orchestrator from configuration, the catalogue files and the environment
/// (flag overrides, API keys). A set-up that does not build is exit code 2 (see
/// [`config_failure`]).
pub(crate) fn orchestrator(config: &GenesisConfig) -> Result<Orchestrator, Failure> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    genesis::orchestrator_from_config(config, &env).map_err(config_failure)
}

#[cfg(test)]
mod one_line_tests {
    use super::one_line;

    #[test]
    fn toml_diagrams_are_left_out_of_one_line_errors() {
        // The shape of a `toml` crate error's Display.
        let e = std::io::Error::other(
            "TOML parse error at line 2, column 17\n  |\n2 | max_in_flight = \"many\"\n  |                 ^^^^^^\ninvalid type: string \"many\", expected usize\n",
        );
        assert_eq!(
            one_line(&e),
            "TOML parse error at line 2, column 17: invalid type: string \"many\", expected usize"
        );
        let io = std::io::Error::other("disk full\nretry later");
        assert_eq!(one_line(&io), "disk full: retry later");
    }
}
