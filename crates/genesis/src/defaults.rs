//! The shipped configuration, compiled in so an embedded orchestrator works with no
//! files on disk. Binaries read the same files from `config/` when present, so operators
//! can edit them.

/// `config/agents.toml`: the 16 built-in agents.
pub const AGENTS_TOML: &str = include_str!("../../../config/agents.toml");
/// `config/routing_rules.toml`: the built-in routing rules.
pub const ROUTING_RULES_TOML: &str = include_str!("../../../config/routing_rules.toml");
/// `config/models.toml`: the built-in model catalogue.
pub const MODELS_TOML: &str = include_str!("../../../config/models.toml");
/// `config/genesis.toml`: documented defaults for every configuration key.
pub const GENESIS_TOML: &str = include_str!("../../../config/genesis.toml");
