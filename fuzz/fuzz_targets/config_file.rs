//! The config file and its `[[rules]]` tables (`config::parse_with_file`):
//! any text is a config or an error, never a panic or an exit; loaded rules
//! hold their invariants and the first rule that speaks decides.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use roomcast::config;
use roomcast::security::rules::{Op, Rules, glob_match};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let args = vec!["roomcast".into()];
    let Ok(cli) = config::parse_with_file(args, Some((Path::new("fuzz.toml"), text))) else {
        return;
    };
    let serve = cli.serve;
    let _ = serve.validate();
    let _ = serve.broker.settings();
    for rule in &serve.security.rules {
        assert!(!rule.pattern.is_empty());
        assert!(rule.subscribe.is_some() || rule.publish.is_some());
        assert!(
            glob_match(&rule.pattern, &rule.pattern),
            "a glob matches itself"
        );
    }
    if let Some(first) = serve.security.rules.first() {
        let rules = Rules::new(serve.security.rules.clone());
        if first.subscribe.is_some() {
            assert_eq!(rules.level(&first.pattern, Op::Subscribe), first.subscribe);
        }
        if first.publish.is_some() {
            assert_eq!(rules.level(&first.pattern, Op::Publish), first.publish);
        }
    }
});
