//! Channel rules: who may subscribe to and publish on which rooms.
//!
//! A rule matches room names by glob (`*` is any run of characters, e.g.
//! `public:*`, `device:*:status`) and grants each operation to a [`Level`]:
//! `anyone`, `authenticated` (any valid token), `token` (a token whose
//! `channels`/`publish` claim names the room) or `nobody` (HTTP API only).
//! The first matching rule wins; rooms no rule matches get the default
//! (`anyone` with `--auth none`, `token` with `--auth jwt`).
//!
//! A rule may also say what the hub keeps of a room's messages for joiners
//! (`cache = "last"`: the newest message, sent to a client as it joins; see
//! `hub::Hub::set_cached_rooms`), first matching rule that speaks winning
//! here too.
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

/// What the hub keeps of a room's messages for clients that join later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cache {
    /// The room's newest message, sent to each client as it joins.
    Last,
    /// Nothing (to exempt rooms from a broader rule further down).
    None,
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
    #[serde(default)]
    pub cache: Option<Cache>,
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

    /// Whether some rule keeps a room's newest message (`cache = "last"`).
    pub fn any_cache(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.cache == Some(Cache::Last))
    }

    /// Whether the first matching rule that sets `cache` sets `last`.
    pub fn caches_last(&self, room: &str) -> bool {
        self.rules
            .iter()
            .filter(|rule| rule.cache.is_some())
            .find(|rule| glob_match(&rule.pattern, room))
            .is_some_and(|rule| rule.cache == Some(Cache::Last))
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
/// hostile patterns or names cannot make it exponential. Over bytes, without
/// allocating (the hub asks it for every message of a cached room): the
/// same as over characters, since a `*` that stopped inside a UTF-8
/// character leaves a continuation byte, which no character of the pattern
/// starts with.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.as_bytes(), text.as_bytes());
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
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
    pattern[p..].iter().all(|c| *c == b'*')
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
                cache: None,
            },
            RuleConfig {
                pattern: "public:*".into(),
                subscribe: Some(Level::Anyone),
                publish: None,
                cache: None,
            },
            RuleConfig {
                pattern: "*".into(),
                subscribe: None,
                publish: Some(Level::Token),
                cache: None,
            },
        ]);
        assert_eq!(rules.level("admin:x", Op::Subscribe), Some(Level::Nobody));
        assert_eq!(rules.level("public:x", Op::Subscribe), Some(Level::Anyone));
        assert_eq!(rules.level("public:x", Op::Publish), Some(Level::Token));
        assert_eq!(rules.level("other", Op::Subscribe), None);
    }

    #[test]
    fn the_first_rule_that_sets_cache_decides() {
        let rule = |pattern: &str, cache| RuleConfig {
            pattern: pattern.into(),
            subscribe: Some(Level::Anyone),
            publish: None,
            cache,
        };
        let rules = Rules::new(vec![
            rule("device:*:cmd", Some(Cache::None)),
            rule("public:*", None),
            rule("device:*", Some(Cache::Last)),
        ]);
        assert!(rules.any_cache());
        assert!(rules.caches_last("device:42"));
        assert!(rules.caches_last("device:42:status"));
        assert!(!rules.caches_last("device:42:cmd"), "exempted above");
        assert!(!rules.caches_last("public:news"), "no rule sets cache");
        assert!(!Rules::new(vec![rule("*", Some(Cache::None))]).any_cache());
    }

    proptest::proptest! {
        #[test]
        fn glob_never_panics(p in ".{0,30}", t in ".{0,60}") {
            let _ = glob_match(&p, &t);
        }

        #[test]
        fn bytes_match_as_characters(p in "[a\\*ü€]{0,8}", t in "[aü€]{0,12}") {
            proptest::prop_assert_eq!(glob_match(&p, &t), glob_by_chars(&p, &t));
        }

        #[test]
        fn star_matches_everything(t in ".{0,60}") {
            proptest::prop_assert!(glob_match("*", &t));
            proptest::prop_assert!(glob_match(&t.replace('*', "?"), &t.replace('*', "?")));
        }
    }

    /// Glob matching over characters, recursive: the reference the byte
    /// matcher is checked against.
    fn glob_by_chars(pattern: &str, text: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some(('*', rest)) => (0..=t.len()).any(|skip| go(rest, &t[skip..])),
                Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
            }
        }
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        go(&p, &t)
    }
}
