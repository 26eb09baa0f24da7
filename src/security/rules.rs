//! Channel rules: who may subscribe to and publish on which rooms.
//!
//! A rule matches room names by glob (`*` is any run of characters, e.g.
//! `public:*`, `device:*:status`) and grants each operation to a [`Level`]:
//! `anyone`, `authenticated` (any valid token), `token` (a token whose
//! `channels`/`publish` claim names the room) or `nobody` (HTTP API only).
//! The first matching rule wins; rooms no rule matches get the default
//! (`anyone` with `--auth none`, `token` with `--auth jwt`).
//!
//! Owns matching and the decision; the TOML shape is parsed by `config`
//! (`[[rules]]` tables) into [`RuleConfig`]. Never reads files itself.

use serde::Deserialize;

/// Who may do something on a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Anyone,
    Authenticated,
    Token,
    Nobody,
}

/// One `[[rules]]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Glob over room names.
    #[serde(rename = "match")]
    pub pattern: String,
    pub subscribe: Option<Level>,
    pub publish: Option<Level>,
}

/// The rules in force, in file order.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<RuleConfig>,
}

/// The operation a client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Subscribe,
    Publish,
}

impl Op {
    pub fn verb(self) -> &'static str {
        match self {
            Op::Subscribe => "subscribe to",
            Op::Publish => "publish to",
        }
    }
}

impl Rules {
    pub fn new(rules: Vec<RuleConfig>) -> Self {
        Rules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The level the first matching rule sets for `op`, if any rule
    /// matching the room says something about `op`.
    pub fn level(&self, room: &str, op: Op) -> Option<Level> {
        self.rules
            .iter()
            .filter(|rule| glob_match(&rule.pattern, room))
            .find_map(|rule| match op {
                Op::Subscribe => rule.subscribe,
                Op::Publish => rule.publish,
            })
    }
}

/// Glob matching over characters: `*` matches any run (also empty); every
/// other character matches itself. Iterative, with one backtrack point, so
/// hostile patterns or names cannot make it exponential.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("public:*", "public:news"));
        assert!(glob_match("public:*", "public:"));
        assert!(!glob_match("public:*", "private:x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("device:*:status", "device:42:status"));
        assert!(!glob_match("device:*:status", "device:42:cmd"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(glob_match("ü*", "über"));
        // No exponential blow-up.
        assert!(!glob_match(&"*a".repeat(50), &"a".repeat(49)));
    }

    #[test]
    fn first_rule_that_speaks_wins() {
        let rules = Rules::new(vec![
            RuleConfig {
                pattern: "admin:*".into(),
                subscribe: Some(Level::Nobody),
                publish: Some(Level::Nobody),
            },
            RuleConfig {
                pattern: "public:*".into(),
                subscribe: Some(Level::Anyone),
                publish: None,
            },
            RuleConfig {
                pattern: "*".into(),
                subscribe: None,
                publish: Some(Level::Token),
            },
        ]);
        assert_eq!(rules.level("admin:x", Op::Subscribe), Some(Level::Nobody));
        assert_eq!(rules.level("public:x", Op::Subscribe), Some(Level::Anyone));
        assert_eq!(rules.level("public:x", Op::Publish), Some(Level::Token));
        assert_eq!(rules.level("other", Op::Subscribe), None);
    }

    proptest::proptest! {
        #[test]
        fn glob_never_panics(p in ".{0,30}", t in ".{0,60}") {
            let _ = glob_match(&p, &t);
        }

        #[test]
        fn star_matches_everything(t in ".{0,60}") {
            proptest::prop_assert!(glob_match("*", &t));
            proptest::prop_assert!(glob_match(&t.replace('*', "?"), &t.replace('*', "?")));
        }
    }
}
