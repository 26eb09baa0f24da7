//! The `--config` TOML file: found from the arguments or ROOMCAST_CONFIG,
//! read, and turned into (flag id, values) defaults for clap; its
//! `[[rules]]` tables are parsed beside the flags.

use std::path::{Path, PathBuf};

use crate::security::RuleConfig;

use super::ConfigError;

/// The `--config` value from the arguments, else ROOMCAST_CONFIG.
pub(super) fn config_path(
    args: &[std::ffi::OsString],
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let mut iter = args.iter().map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(|v| PathBuf::from(v.as_ref()));
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    env("ROOMCAST_CONFIG").map(PathBuf::from)
}

pub(super) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(source),
    })
}

/// The file's keys that are tables rather than flags (`[[rules]]`).
const TABLE_KEYS: &[&str] = &["rules"];

/// The `[[rules]]` tables of the file, in order.
pub(super) fn file_rules(path: &Path, table: &toml::Table) -> Result<Vec<RuleConfig>, ConfigError> {
    let Some(value) = table.get("rules") else {
        return Ok(Vec::new());
    };
    parse_rules(value).map_err(|message| ConfigError::BadRules {
        path: path.to_owned(),
        message,
    })
}

/// Parses the value of the `rules` key: an array of tables with `match`
/// and optional `subscribe`/`publish` levels and `cache`. Public for the fuzz tests.
pub fn parse_rules(value: &toml::Value) -> Result<Vec<RuleConfig>, String> {
    let rules: Vec<RuleConfig> = value
        .clone()
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    for rule in &rules {
        if rule.pattern.is_empty() {
            return Err("`match` must not be empty".into());
        }
        if rule.subscribe.is_none() && rule.publish.is_none() && rule.cache.is_none() {
            return Err(format!(
                "rule `{}` sets none of `subscribe`, `publish` and `cache`",
                rule.pattern
            ));
        }
    }
    Ok(rules)
}

/// Turns the TOML table into (flag id, values) pairs, refusing unknown keys.
pub(super) fn file_defaults(
    path: &Path,
    table: toml::Table,
    command: &clap::Command,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let mut defaults = Vec::new();
    for (key, value) in table {
        if TABLE_KEYS.contains(&key.as_str()) {
            continue;
        }
        let id = key.replace('-', "_");
        let known = command
            .get_arguments()
            .any(|arg| arg.get_id() == id.as_str() && id != "config");
        // `api_key` is the file spelling of the repeatable --api-key flag.
        let id = if id == "api_key" {
            "api_keys".to_string()
        } else {
            id
        };
        if !known && id != "api_keys" {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let values = toml_values(&value).ok_or_else(|| ConfigError::BadValue {
            path: path.to_owned(),
            key,
        })?;
        defaults.push((id, values));
    }
    Ok(defaults)
}

fn toml_values(value: &toml::Value) -> Option<Vec<String>> {
    match value {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![b.to_string()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                toml_values(v)
                    .filter(|v| v.len() == 1)
                    .map(|mut v| v.remove(0))
            })
            .collect(),
        _ => None,
    }
}
