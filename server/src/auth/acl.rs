//! Mosquitto-compatible ACL files.
//!
//! The format, as Mosquitto documents it:
//! - `topic [read|write|readwrite|deny] <filter>`: access to topics matching `filter`
//!   (`+`/`#` allowed). Without an access word the access is `readwrite`, and the filter is
//!   the rest of the line (so it may contain spaces only after an access word).
//! - `user <name>`: the `topic` lines after it, up to the next `user` line, apply to the
//!   client that authenticated as `name`. `topic` lines *before* the first `user` line
//!   apply to anonymous clients (no username).
//! - `pattern [read|write|readwrite|deny] <filter>`: applies to every client wherever it is
//!   in the file; a level that is exactly `%u` or `%c` stands for the client's username or
//!   client id. A pattern with `%u` never applies to a client without a username, and a
//!   pattern never applies when the substituted name holds `+`, `#` or `/` (which would
//!   widen the rule: Mosquitto's CVE-2017-7650).
//! - `deny` wins over any grant; otherwise access needs a grant. Lines starting with `#`
//!   are comments.
//!
//! Subscribing: a filter is allowed when one read grant *covers* it (every topic the
//! filter can match, the grant matches too) and no deny rule covers it. A subscription
//! that only partly overlaps a deny rule is allowed; the messages in the denied part are
//! then stopped at delivery by [`Acl::check`] with [`Access::Read`] (as Mosquitto does), so
//! the broker must check reads per delivered message, retained ones included.
//!
//! The file is compiled once into per-user rule lists of pre-split levels; a check is a
//! hash lookup plus a walk over that user's rules and the patterns, with no allocation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shoal_core::{TopicFilter, TopicName};

use super::ClientIdentity;

/// The kind of access being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receiving messages (subscribe, delivery).
    Read,
    /// Publishing.
    Write,
}

/// What one ACL line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn allows(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::ReadWrite, _) | (Self::Read, Access::Read) | (Self::Write, Access::Write)
        )
    }
}

/// One level of a compiled rule.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`
    Single,
    /// `#` (always last)
    Multi,
    /// `%u` in a pattern.
    Username,
    /// `%c` in a pattern.
    ClientId,
}

#[derive(Debug, Clone)]
struct Rule {
    grant: Grant,
    levels: Vec<Level>,
    /// Whether the first level is a wildcard: [MQTT-4.7.2-1] such a rule does not match
    /// topics starting with `$`.
    starts_wild: bool,
}

/// The rules that apply to one user (or to anonymous clients).
#[derive(Debug, Clone, Default)]
struct RuleSet {
    rules: Vec<Rule>,
}

/// A bad line in an ACL file.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read ACL file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be understood.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: AclLineError,
    },
}

/// What is wrong with one ACL line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclLineError {
    /// The first word is not `topic`, `pattern` or `user`.
    #[error("unknown keyword {0:?} (expected topic, pattern or user)")]
    UnknownKeyword(String),
    /// `user` without a name.
    #[error("user line without a name")]
    MissingUser,
    /// `topic`/`pattern` without a filter.
    #[error("missing topic filter")]
    MissingFilter,
    /// The filter is not a valid MQTT topic filter.
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    /// `%u`/`%c` in a `topic` line, or mixed with other text in a level.
    #[error("%u and %c are only substituted in pattern lines, as a whole level: {0:?}")]
    MisplacedSubstitution(String),
}

/// A compiled ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: RuleSet,
    users: HashMap<String, RuleSet>,
    patterns: RuleSet,
}

impl Acl {
    /// Reads and compiles an ACL file.
    ///
    /// # Errors
    /// [`AclError`] naming the file and line.
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| AclError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Compiles the text of an ACL file; `path` is only used in errors.
    ///
    /// # Errors
    /// As [`Acl::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, AclError> {
        let mut acl = Self::default();
        let mut current: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let err = |reason| AclError::Line { path: path.to_owned(), line: i + 1, reason };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) =
                line.split_once(char::is_whitespace).map_or((line, ""), |(k, r)| (k, r.trim()));
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err(AclLineError::MissingUser));
                    }
                    acl.users.entry(rest.to_owned()).or_default();
                    current = Some(rest.to_owned());
                }
                "topic" | "pattern" => {
                    let is_pattern = keyword == "pattern";
                    let rule = parse_rule(rest, is_pattern).map_err(err)?;
                    let set = if is_pattern {
                        &mut acl.patterns
                    } else {
                        match &current {
                            Some(user) => acl.users.entry(user.clone()).or_default(),
                            None => &mut acl.anonymous,
                        }
                    };
                    set.rules.push(rule);
                }
                other => return Err(err(AclLineError::UnknownKeyword(other.to_owned()))),
            }
        }
        Ok(acl)
    }

    fn sets<'a>(&'a self, client: &ClientIdentity) -> [Option<&'a RuleSet>; 2] {
        let own = match client.username.as_deref() {
            Some(user) => self.users.get(user),
            None => Some(&self.anonymous),
        };
        [own, Some(&self.patterns)]
    }

    /// Whether `client` may read (receive) or write (publish) `topic`.
    pub fn check(&self, client: &ClientIdentity, topic: &TopicName, access: Access) -> bool {
        let topic = topic.as_str();
        let dollar = topic.starts_with('$');
        let sets = self.sets(client);
        let rules = || sets.iter().flatten().flat_map(|s| s.rules.iter());
        let matches = |r: &Rule| !(dollar && r.starts_wild) && rule_matches(r, topic, client);
        if rules().any(|r| r.grant == Grant::Deny && matches(r)) {
            return false;
        }
        rules().any(|r| r.grant.allows(access) && matches(r))
    }

    /// Whether `client` may subscribe to `filter`: a read grant covers it and no deny rule
    /// does. See the module doc for partial overlaps with deny rules.
    pub fn check_subscribe(&self, client: &ClientIdentity, filter: &TopicFilter) -> bool {
        let filter = filter.as_str();
        let dollar = filter.starts_with('$');
        let sets = self.sets(client);
        let rules = || sets.iter().flatten().flat_map(|s| s.rules.iter());
        let covers = |r: &Rule| !(dollar && r.starts_wild) && rule_covers(r, filter, client);
        if rules().any(|r| r.grant == Grant::Deny && covers(r)) {
            return false;
        }
        rules().any(|r| r.grant.allows(Access::Read) && covers(r))
    }
}

fn parse_rule(rest: &str, is_pattern: bool) -> Result<Rule, AclLineError> {
    let (grant, filter) = match rest.split_once(char::is_whitespace) {
        Some((word, filter)) => match word {
            "read" => (Grant::Read, filter.trim()),
            "write" => (Grant::Write, filter.trim()),
            "readwrite" => (Grant::ReadWrite, filter.trim()),
            "deny" => (Grant::Deny, filter.trim()),
            _ => (Grant::ReadWrite, rest),
        },
        None => match rest {
            "read" | "write" | "readwrite" | "deny" | "" => {
                return Err(AclLineError::MissingFilter)
            }
            _ => (Grant::ReadWrite, rest),
        },
    };
    // Validate with the real filter parser; substitutions are replaced by a plain level.
    let mut levels = Vec::new();
    for level in filter.split('/') {
        levels.push(match level {
            "+" => Level::Single,
            "#" => Level::Multi,
            "%u" if is_pattern => Level::Username,
            "%c" if is_pattern => Level::ClientId,
            l if l.contains("%u") || l.contains("%c") => {
                return Err(AclLineError::MisplacedSubstitution(filter.to_owned()))
            }
            l => Level::Literal(l.to_owned()),
        });
    }
    let check: String = filter.replace("%u", "u").replace("%c", "c");
    if TopicFilter::parse(&check).is_err() {
        return Err(AclLineError::InvalidFilter(filter.to_owned()));
    }
    let starts_wild = matches!(levels.first(), Some(Level::Single | Level::Multi));
    Ok(Rule { grant, levels, starts_wild })
}

/// The name a substitution level stands for, or `None` if the rule cannot apply.
fn substitute<'a>(level: &Level, client: &'a ClientIdentity) -> Option<&'a str> {
    let name = match level {
        Level::Username => client.username.as_deref()?,
        Level::ClientId => client.client_id.as_str(),
        _ => return None,
    };
    // A name holding a separator or wildcard would widen the rule.
    (!name.contains(['/', '+', '#'])).then_some(name)
}

/// Whether the rule matches a topic name.
fn rule_matches(rule: &Rule, topic: &str, client: &ClientIdentity) -> bool {
    let mut topic_levels = topic.split('/');
    for level in &rule.levels {
        let lit = match level {
            Level::Multi => return true,
            Level::Single => {
                if topic_levels.next().is_none() {
                    return false;
                }
                continue;
            }
            Level::Literal(l) => l.as_str(),
            Level::Username | Level::ClientId => match substitute(level, client) {
                Some(name) => name,
                None => return false,
            },
        };
        if topic_levels.next() != Some(lit) {
            return false;
        }
    }
    topic_levels.next().is_none()
}

/// Whether every topic `filter` matches is matched by the rule.
fn rule_covers(rule: &Rule, filter: &str, client: &ClientIdentity) -> bool {
    let mut filter_levels = filter.split('/');
    for (i, level) in rule.levels.iter().enumerate() {
        let Some(f) = filter_levels.next() else {
            // The filter ended first. `a/#` also matches `a` itself, so it covers `a`.
            return *level == Level::Multi;
        };
        match level {
            Level::Multi => return true,
            // `+` covers one level of anything but `#`, which may span several. Only a
            // filter that is just `#` is covered by `+/#`: both match every topic of one
            // level or more, whereas `a/#` also matches `a`, which `a/+/#` does not.
            Level::Single if f == "#" => {
                return i == 0 && rule.levels.get(1..) == Some(&[Level::Multi][..]);
            }
            Level::Single => {}
            Level::Literal(l) => {
                if f != l {
                    return false;
                }
            }
            Level::Username | Level::ClientId => {
                if substitute(level, client) != Some(f) {
                    return false;
                }
            }
        }
    }
    filter_levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# Anonymous clients: read the public tree only.
topic read public/#

user alice
topic readwrite users/alice/#
topic read public/#
topic deny public/secret/#

user admin
topic #
topic $SYS/#

# Everyone may write their own status, whatever their section.
pattern write devices/%c/status
pattern readwrite users/%u/inbox/#
";

    fn acl() -> Acl {
        Acl::parse(FILE, Path::new("/etc/shoal/acl")).unwrap()
    }

    fn who(user: Option<&str>, client_id: &str) -> ClientIdentity {
        ClientIdentity { username: user.map(str::to_owned), client_id: client_id.to_owned() }
    }

    fn t(s: &str) -> TopicName {
        TopicName::try_from_str(s).unwrap()
    }

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
    }

    #[test]
    fn anonymous_clients_get_the_section_before_the_first_user() {
        let acl = acl();
        let anon = who(None, "c1");
        assert!(acl.check(&anon, &t("public/news"), Access::Read));
        assert!(!acl.check(&anon, &t("public/news"), Access::Write));
        assert!(!acl.check(&anon, &t("users/alice/x"), Access::Read));
    }

    #[test]
    fn user_sections_apply_only_to_that_user() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        let bob = who(Some("bob"), "b1");
        assert!(acl.check(&alice, &t("users/alice/notes"), Access::Write));
        assert!(acl.check(&alice, &t("users/alice/notes"), Access::Read));
        assert!(!acl.check(&bob, &t("users/alice/notes"), Access::Read));
        // Bob has no section: he is not anonymous, so the general section is not his.
        assert!(!acl.check(&bob, &t("public/news"), Access::Read));
    }

    #[test]
    fn deny_wins_over_a_broader_grant() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(acl.check(&alice, &t("public/weather"), Access::Read));
        assert!(!acl.check(&alice, &t("public/secret"), Access::Read));
        assert!(!acl.check(&alice, &t("public/secret/plans"), Access::Read));
    }

    #[test]
    fn patterns_apply_to_everyone_with_substitution() {
        let acl = acl();
        let bob = who(Some("bob"), "sensor-7");
        assert!(acl.check(&bob, &t("devices/sensor-7/status"), Access::Write));
        assert!(!acl.check(&bob, &t("devices/sensor-8/status"), Access::Write));
        assert!(!acl.check(&bob, &t("devices/sensor-7/status"), Access::Read));
        assert!(acl.check(&bob, &t("users/bob/inbox/1"), Access::Read));
        assert!(!acl.check(&bob, &t("users/alice/inbox/1"), Access::Read));
        // Anonymous clients match %c patterns but never %u ones.
        let anon = who(None, "sensor-9");
        assert!(acl.check(&anon, &t("devices/sensor-9/status"), Access::Write));
        assert!(!acl.check(&anon, &t("users//inbox/1"), Access::Read));
    }

    #[test]
    fn wildcards_in_names_do_not_widen_patterns() {
        let acl = acl();
        for id in ["+", "#", "a/b"] {
            let sneaky = who(Some(id), id);
            assert!(!acl.check(&sneaky, &t("devices/x/status"), Access::Write), "{id}");
            assert!(!acl.check_subscribe(&sneaky, &f("users/+/inbox/#")), "{id}");
            assert!(!acl.check_subscribe(&sneaky, &f("users/#")), "{id}");
        }
    }

    #[test]
    fn hash_rule_does_not_match_dollar_topics() {
        let acl = acl();
        let admin = who(Some("admin"), "adm");
        assert!(acl.check(&admin, &t("anything/at/all"), Access::Write));
        // [MQTT-4.7.2-1]: `#` does not reach $SYS; the explicit line does.
        assert!(acl.check(&admin, &t("$SYS/broker/uptime"), Access::Read));
        let only_hash = Acl::parse("topic #", Path::new("a")).unwrap();
        assert!(!only_hash.check(&who(None, "c"), &t("$SYS/x"), Access::Read));
        assert!(!only_hash.check_subscribe(&who(None, "c"), &f("$SYS/#")));
    }

    #[test]
    fn subscribe_needs_a_read_grant_covering_the_filter() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(acl.check_subscribe(&alice, &f("users/alice/#")));
        assert!(acl.check_subscribe(&alice, &f("users/alice")));
        assert!(acl.check_subscribe(&alice, &f("users/alice/+/x")));
        assert!(!acl.check_subscribe(&alice, &f("users/#")));
        assert!(!acl.check_subscribe(&alice, &f("users/+/notes")));
        assert!(!acl.check_subscribe(&alice, &f("#")));
        // Write-only pattern grants no subscription.
        assert!(!acl.check_subscribe(&alice, &f("devices/a1/status")));
    }

    #[test]
    fn subscribe_inside_a_deny_is_refused_but_overlap_is_filtered_at_delivery() {
        let acl = acl();
        let alice = who(Some("alice"), "a1");
        assert!(!acl.check_subscribe(&alice, &f("public/secret/#")));
        assert!(!acl.check_subscribe(&alice, &f("public/secret/+")));
        // `public/#` overlaps the denied part: allowed, and denied topics fail the read
        // check done per delivered message.
        assert!(acl.check_subscribe(&alice, &f("public/#")));
        assert!(!acl.check(&alice, &t("public/secret/x"), Access::Read));
    }

    #[test]
    fn plus_rule_covers_plus_but_not_hash() {
        let acl = Acl::parse("topic read a/+/c", Path::new("x")).unwrap();
        let c = who(None, "c");
        assert!(acl.check_subscribe(&c, &f("a/+/c")));
        assert!(acl.check_subscribe(&c, &f("a/b/c")));
        assert!(!acl.check_subscribe(&c, &f("a/#")));
        assert!(!acl.check_subscribe(&c, &f("a/+")));
        assert!(!acl.check_subscribe(&c, &f("a/+/c/d")));
        let any = Acl::parse("topic read +/#", Path::new("x")).unwrap();
        assert!(any.check_subscribe(&c, &f("#")));
        let deeper = Acl::parse("topic read a/+/#", Path::new("x")).unwrap();
        assert!(!deeper.check_subscribe(&c, &f("a/#")), "a/# matches a, a/+/# does not");
    }

    #[test]
    fn topic_without_access_word_is_readwrite_and_may_follow_an_access_word_with_spaces() {
        let acl = Acl::parse("topic a/b\ntopic read with space/x", Path::new("x")).unwrap();
        let c = who(None, "c");
        assert!(acl.check(&c, &t("a/b"), Access::Write));
        assert!(acl.check(&c, &t("a/b"), Access::Read));
        assert!(acl.check(&c, &t("with space/x"), Access::Read));
        assert!(!acl.check(&c, &t("with space/x"), Access::Write));
    }

    #[test]
    fn empty_acl_denies_everything() {
        let acl = Acl::parse("# nothing\n", Path::new("x")).unwrap();
        assert!(!acl.check(&who(None, "c"), &t("a"), Access::Read));
        assert!(!acl.check_subscribe(&who(Some("u"), "c"), &f("a")));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            ("topik read a", AclLineError::UnknownKeyword("topik".into())),
            ("user", AclLineError::MissingUser),
            ("topic", AclLineError::MissingFilter),
            ("topic read", AclLineError::MissingFilter),
            ("topic read a/#/b", AclLineError::InvalidFilter("a/#/b".into())),
            ("topic read a/%u", AclLineError::MisplacedSubstitution("a/%u".into())),
            ("pattern read a/x%u", AclLineError::MisplacedSubstitution("a/x%u".into())),
        ];
        for (line, want) in cases {
            let text = format!("# first\n{line}\n");
            let err = Acl::parse(&text, Path::new("/etc/shoal/acl")).unwrap_err();
            match &err {
                AclError::Line { line: 2, reason, .. } => assert_eq!(*reason, want, "{line}"),
                other => panic!("{line}: {other:?}"),
            }
            assert!(err.to_string().starts_with("/etc/shoal/acl:2: "), "{err}");
        }
    }

    /// Reference model: a rule covers a filter iff it matches every topic in a sample
    /// that the filter matches (levels drawn from the same small alphabet).
    #[test]
    fn covers_agrees_with_matching_on_sampled_topics() {
        let alphabet = ["a", "b", "+", "#"];
        let mut filters = vec![String::new()];
        for _ in 0..3 {
            let mut next = Vec::new();
            for fl in &filters {
                for l in alphabet {
                    next.push(if fl.is_empty() { l.to_string() } else { format!("{fl}/{l}") });
                }
            }
            filters.extend(next);
        }
        let filters: Vec<TopicFilter> =
            filters.iter().filter_map(|s| TopicFilter::parse(s).ok()).collect();
        let mut topics = vec![String::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for tp in &topics {
                for l in ["a", "b", "z"] {
                    next.push(if tp.is_empty() { l.to_string() } else { format!("{tp}/{l}") });
                }
            }
            topics.extend(next);
        }
        let topics: Vec<TopicName> =
            topics.iter().filter_map(|s| TopicName::try_from_str(s).ok()).collect();
        let c = who(None, "c");
        for rule_filter in &filters {
            let rule = parse_rule(&format!("read {rule_filter}"), false).unwrap();
            for sub in &filters {
                // Only short filters: a sample of depth 4 decides depth-3 filters.
                let covered = topics
                    .iter()
                    .filter(|tp| sub.matches(tp))
                    .all(|tp| rule_matches(&rule, tp.as_str(), &c));
                assert_eq!(
                    rule_covers(&rule, sub.as_str(), &c),
                    covered,
                    "rule {rule_filter} sub {sub}"
                );
            }
        }
    }
}
