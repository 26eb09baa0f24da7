//! The outside of the configuration stays as it is while its inside moves:
//! every flag keeps its name, env variable, default and `--help` text, and a
//! `--config` file that sets every key still loads.
//!
//! `tests/fixtures/config/` holds what the flags were when `ServeArgs` was
//! one struct: `flags.txt` (one line per argument, hidden ones included) and
//! `help.txt` (`roomcast --help`). A change to a flag shows up here as a diff;
//! a deliberate one updates the fixture with it.

use std::collections::BTreeMap;
use std::path::Path;

use clap::CommandFactory;
use roomcast::config::{Cli, Command, parse_with_file};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One line per argument of `roomcast` (= `roomcast serve`): id, flag, env,
/// defaults, heading, visibility. Sorted by id, so moving an argument to
/// another group (which moves it in `--help`) is no change.
fn flags() -> String {
    let command = Cli::command();
    let mut lines: Vec<String> = command
        .get_arguments()
        .map(|arg| {
            let defaults: Vec<_> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            format!(
                "{} --{} env={} default={:?} heading={} hide={} hide_short_help={} delimiter={:?}",
                arg.get_id(),
                arg.get_long().unwrap_or("-"),
                arg.get_env().map_or("-".into(), |e| e.to_string_lossy()),
                defaults,
                arg.get_help_heading().unwrap_or("-"),
                arg.is_hide_set(),
                arg.is_hide_short_help_set(),
                arg.get_value_delimiter(),
            )
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

/// `--help` as blocks (a heading's name and one argument's lines), sorted;
/// env values of the test's own environment are left out.
fn help_blocks(help: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let line = line.trim_end();
        let starts_arg = line.starts_with("  -") || line.starts_with("      --");
        let is_heading = !line.starts_with(' ') && line.ends_with(':');
        if starts_arg || is_heading {
            blocks.extend(current.take());
        }
        if is_heading {
            heading = line.to_owned();
        } else if starts_arg {
            current = Some(format!("{heading}\n{line}"));
        } else if let Some(block) = &mut current {
            let line = match line.find("[env: ") {
                Some(at) => match line[at..].find('=') {
                    Some(eq) => format!("{}]", &line[..at + eq]),
                    None => line.to_owned(),
                },
                None => line.to_owned(),
            };
            block.push('\n');
            block.push_str(&line);
        }
    }
    blocks.extend(current);
    for block in &mut blocks {
        *block = block.trim_end().to_owned();
    }
    blocks.sort();
    blocks
}

#[test]
fn every_flag_keeps_its_name_env_and_default() {
    let now = flags();
    let before = fixture("flags.txt");
    assert!(
        now == before,
        "flags changed (tests/fixtures/config/flags.txt):\n{}",
        diff(&before, &now)
    );
}

#[test]
fn help_lists_the_same_flags_with_the_same_text() {
    let now = Cli::command().render_long_help().to_string();
    let before = fixture("help.txt");
    let (now_blocks, before_blocks) = (help_blocks(&now), help_blocks(&before));
    assert!(before_blocks.len() > 50, "the fixture has the flags");
    assert!(
        now_blocks == before_blocks,
        "--help changed (tests/fixtures/config/help.txt):\n{}",
        diff(&before_blocks.join("\n"), &now_blocks.join("\n"))
    );
}

/// A file that sets every key (each to a value unlike its default) loads,
/// in `roomcast` and `roomcast serve` alike, and reaches its flag.
#[test]
fn a_config_file_with_every_key_loads() {
    let file = fixture("every-key.toml");
    let table: toml::Table = file.parse().expect("valid TOML");
    let command = Cli::command();
    let keys: Vec<String> = command
        .get_arguments()
        .map(|arg| arg.get_id().as_str().to_owned())
        .filter(|id| id != "config")
        .map(|id| {
            if id == "api_keys" {
                "api_key".into()
            } else {
                id
            }
        })
        .collect();
    for key in &keys {
        assert!(table.contains_key(key), "every-key.toml lacks `{key}`");
    }
    let path = Path::new("every-key.toml");
    for args in [vec!["roomcast"], vec!["roomcast", "serve"]] {
        let args = args.into_iter().map(Into::into).collect();
        let cli = match parse_with_file(args, Some((path, &file))) {
            Ok(cli) => cli,
            Err(error) => panic!("every-key.toml: {error}"),
        };
        let serve = match cli.command {
            Some(Command::Serve(serve)) => *serve,
            _ => cli.serve,
        };
        // Each key reached its flag: the parsed settings read back as the file.
        let debug = format!("{serve:?}");
        let values: BTreeMap<&str, &str> = [
            ("listen", "127.0.0.2:9090"),
            ("redis_url", "redis://10.9.9.9:6390"),
            ("nats_prefix", "nats-prefix-x"),
            ("emitter_key", "emitter-key-x"),
            ("socketio_path", "/sio-x/"),
            ("acme_directory", "https://acme.example/dir"),
            ("rfc2136_server", "10.0.0.53:53"),
            ("mqtt_share_group", "share-x"),
            ("jwt_audience", "aud-x"),
            ("log", "debug-x"),
        ]
        .into_iter()
        .collect();
        for (key, value) in values {
            assert!(debug.contains(value), "`{key}` = {value:?} not in {debug}");
        }
        assert_eq!(serve.security.rules.len(), 1, "[[rules]] beside the flags");
    }
}

/// The lines of `before` and `now` that differ, marked - and +.
fn diff(before: &str, now: &str) -> String {
    let before_lines: Vec<&str> = before.lines().collect();
    let now_lines: Vec<&str> = now.lines().collect();
    let mut out = String::new();
    for line in &before_lines {
        if !now_lines.contains(line) {
            out.push_str(&format!("- {line}\n"));
        }
    }
    for line in &now_lines {
        if !before_lines.contains(line) {
            out.push_str(&format!("+ {line}\n"));
        }
    }
    out
}
