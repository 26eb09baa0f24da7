//! MQTT topic filters (`--mqtt-topic`) and the room template (`--mqtt-room`):
//! parsed and checked once at start, then used to name the room of each
//! received message.
//!
//! A template is literal text with placeholders `{1}`, `{2}`, … standing for
//! the topic levels matched by the filter's `+` wildcards, in order. Without a
//! template the room is the topic itself. Pure code: no I/O, no broker.

use std::fmt;

/// Why a filter or template cannot be used (a start-up error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("--mqtt-topic must not be empty")]
    EmptyFilter,
    #[error("--mqtt-topic `{0}`: `#` must be the last level, alone (e.g. `devices/#`)")]
    HashNotLast(String),
    #[error("--mqtt-topic `{0}`: `+` and `#` must fill a whole level (e.g. `devices/+/telemetry`)")]
    WildcardInsideLevel(String),
    #[error("--mqtt-topic `{0}` must not contain a NUL character")]
    Nul(String),
    #[error(
        "--mqtt-topic `{0}`: give the plain filter; roomcast adds `$share/<group>/` itself (--mqtt-share-group)"
    )]
    SharePrefix(String),
    #[error("--mqtt-room must not be empty (leave it unset to use the topic as the room)")]
    EmptyTemplate,
    #[error(
        "--mqtt-room `{template}`: `{{` at byte {at} must start a placeholder such as {{1}}, and `}}` must end one"
    )]
    TemplateSyntax { template: String, at: usize },
    #[error("--mqtt-room `{template}`: placeholders count from {{1}}; {{0}} does not exist")]
    ZeroPlaceholder { template: String },
    #[error(
        "--mqtt-room `{template}` uses {{{index}}} but --mqtt-topic `{filter}` has only {wildcards} `+` wildcard(s)"
    )]
    MissingWildcard {
        template: String,
        index: usize,
        filter: String,
        wildcards: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: exactly one level, possibly empty.
    Plus,
    /// `#`: this level and everything below, or nothing (`a/#` matches `a`).
    Hash,
}

/// One checked topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    text: String,
    levels: Vec<Level>,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, TopicError> {
        if text.is_empty() {
            return Err(TopicError::EmptyFilter);
        }
        if text.contains('\0') {
            return Err(TopicError::Nul(text.to_owned()));
        }
        if text.starts_with("$share/") {
            return Err(TopicError::SharePrefix(text.to_owned()));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Plus,
                "#" if i + 1 == parts.len() => Level::Hash,
                "#" => return Err(TopicError::HashNotLast(text.to_owned())),
                _ if part.contains('#') => return Err(TopicError::HashNotLast(text.to_owned())),
                _ if part.contains('+') => {
                    return Err(TopicError::WildcardInsideLevel(text.to_owned()));
                }
                _ => Level::Exact((*part).to_owned()),
            };
            levels.push(level);
        }
        Ok(Filter {
            text: text.to_owned(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Number of `+` levels (the placeholders a template may use).
    pub fn wildcards(&self) -> usize {
        self.levels.iter().filter(|l| **l == Level::Plus).count()
    }

    /// The levels `topic` puts in this filter's `+` wildcards, or `None`
    /// when the topic does not match.
    pub fn captures<'t>(&self, topic: &'t str) -> Option<Vec<&'t str>> {
        // MQTT: a filter starting with a wildcard never matches `$SYS/...`.
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return None;
        }
        let mut captured = Vec::new();
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return Some(captured),
                Level::Plus => captured.push(topic_levels.next()?),
                Level::Exact(name) => {
                    if topic_levels.next()? != name {
                        return None;
                    }
                }
            }
        }
        topic_levels.next().is_none().then_some(captured)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{n}`, 1-based.
    Wildcard(usize),
}

/// The filters and the template: topic in, room out.
#[derive(Debug, Clone)]
pub struct Mapping {
    filters: Vec<Filter>,
    /// `None`: the room is the topic.
    template: Option<Vec<Part>>,
}

impl Mapping {
    /// Checks every filter, and the template against each filter: a `{n}`
    /// needs at least n `+` wildcards in every filter it may apply to.
    pub fn new(filters: &[String], template: Option<&str>) -> Result<Mapping, TopicError> {
        let filters = filters
            .iter()
            .map(|f| Filter::parse(f))
            .collect::<Result<Vec<_>, _>>()?;
        let template = template.map(parse_template).transpose()?;
        if let Some(parts) = &template {
            let highest = parts
                .iter()
                .filter_map(|p| match p {
                    Part::Wildcard(n) => Some(*n),
                    Part::Literal(_) => None,
                })
                .max()
                .unwrap_or(0);
            if let Some(filter) = filters.iter().find(|f| f.wildcards() < highest) {
                return Err(TopicError::MissingWildcard {
                    template: render_template(parts),
                    index: highest,
                    filter: filter.text.clone(),
                    wildcards: filter.wildcards(),
                });
            }
        }
        Ok(Mapping { filters, template })
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    /// The room of a message on `topic`: the template filled from the first
    /// filter (in flag order) that matches, or the topic itself. `None` when
    /// no filter matches (the broker sent something we did not ask for).
    pub fn room(&self, topic: &str) -> Option<String> {
        let captured = self.filters.iter().find_map(|f| f.captures(topic))?;
        let Some(parts) = &self.template else {
            return Some(topic.to_owned());
        };
        let mut room = String::new();
        for part in parts {
            match part {
                Part::Literal(text) => room.push_str(text),
                // Checked at start: every filter has enough wildcards.
                Part::Wildcard(n) => room.push_str(captured.get(n - 1).copied().unwrap_or("")),
            }
        }
        Some(room)
    }
}

fn parse_template(template: &str) -> Result<Vec<Part>, TopicError> {
    if template.is_empty() {
        return Err(TopicError::EmptyTemplate);
    }
    let syntax = |at| TopicError::TemplateSyntax {
        template: template.to_owned(),
        at,
    };
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = template.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' => {
                let rest = &template[at + 1..];
                let close = rest.find('}').ok_or_else(|| syntax(at))?;
                let digits = &rest[..close];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(syntax(at));
                }
                let index: usize = digits.parse().map_err(|_| syntax(at))?;
                if index == 0 {
                    return Err(TopicError::ZeroPlaceholder {
                        template: template.to_owned(),
                    });
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Wildcard(index));
                // Skip the digits and the `}` (all ASCII: one char per byte).
                for _ in 0..=close {
                    chars.next();
                }
            }
            '}' => return Err(syntax(at)),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

fn render_template(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| match p {
            Part::Literal(text) => text.clone(),
            Part::Wildcard(n) => format!("{{{n}}}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(filters: &[&str], template: Option<&str>) -> Result<Mapping, TopicError> {
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        Mapping::new(&filters, template)
    }

    #[test]
    fn the_room_is_the_topic_by_default() {
        let m = mapping(&["#"], None).unwrap();
        assert_eq!(
            m.room("devices/42/telemetry").as_deref(),
            Some("devices/42/telemetry")
        );
        assert_eq!(m.room("$SYS/broker/load"), None, "wildcards skip $ topics");
    }

    #[test]
    fn placeholders_take_the_plus_levels_in_order() {
        let m = mapping(&["devices/+/telemetry"], Some("device-{1}")).unwrap();
        assert_eq!(m.room("devices/42/telemetry").as_deref(), Some("device-42"));
        assert_eq!(m.room("devices/42/status"), None);
        assert_eq!(m.room("devices/42/telemetry/x"), None);
        let m = mapping(&["site/+/+/#"], Some("{2}@{1}:{2}")).unwrap();
        assert_eq!(
            m.room("site/paris/dev7/a/b").as_deref(),
            Some("dev7@paris:dev7")
        );
        assert_eq!(
            m.room("site/paris/dev7").as_deref(),
            Some("dev7@paris:dev7")
        );
        assert_eq!(m.room("site/paris"), None);
        // An empty level is a level.
        let m = mapping(&["a/+/c"], Some("r{1}")).unwrap();
        assert_eq!(m.room("a//c").as_deref(), Some("r"));
    }

    #[test]
    fn the_first_matching_filter_fills_the_template() {
        let m = mapping(&["a/+/x", "+/b/+"], Some("{1}")).unwrap();
        assert_eq!(m.room("a/b/x").as_deref(), Some("b"));
        assert_eq!(m.room("z/b/y").as_deref(), Some("z"));
    }

    #[test]
    fn bad_filters_are_refused_by_name() {
        for (filter, expected) in [
            ("", TopicError::EmptyFilter),
            ("a/#/b", TopicError::HashNotLast("a/#/b".into())),
            ("a/b#", TopicError::HashNotLast("a/b#".into())),
            ("a/b+/c", TopicError::WildcardInsideLevel("a/b+/c".into())),
            ("$share/g/a", TopicError::SharePrefix("$share/g/a".into())),
            ("a\0b", TopicError::Nul("a\0b".into())),
        ] {
            assert_eq!(
                mapping(&[filter], None).unwrap_err(),
                expected,
                "{filter:?}"
            );
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let err = mapping(&["devices/+/telemetry", "x/+/+"], Some("{1}-{2}")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--mqtt-room `{1}-{2}` uses {2} but --mqtt-topic `devices/+/telemetry` has only 1 `+` wildcard(s)"
        );
        assert_eq!(
            mapping(&["#"], Some("")).unwrap_err(),
            TopicError::EmptyTemplate
        );
        for template in ["{", "a{x}", "{}", "a}", "{1", "{-1}"] {
            let err = mapping(&["+"], Some(template)).unwrap_err();
            assert!(
                matches!(err, TopicError::TemplateSyntax { .. }),
                "{template}: {err}"
            );
        }
        assert!(matches!(
            mapping(&["+"], Some("{0}")).unwrap_err(),
            TopicError::ZeroPlaceholder { .. }
        ));
        assert!(mapping(&["+"], Some("{99999999999999999999999}")).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_filter_template_and_topic_is_handled(
            filter in "[a-c+#/]{0,12}",
            template in "[a{}1-3]{0,10}",
            topic in "[a-c/$]{0,12}",
        ) {
            if let Ok(m) = mapping(&[&filter], Some(&template)) {
                let _ = m.room(&topic);
            }
        }
    }
}
