//! The scenarios: which connections a run opens, what each one publishes or subscribes
//! to, and how many copies of each message the subscribers should see between them.
//!
//! A [`Plan`] is plain data; `crate::engine` opens the connections and drives them.
//! Every publisher publishes on exactly one topic, so the subscribers' per-publisher
//! sequence checks (`crate::payload::SeqTracker`) are per (publisher, topic).

use std::ops::Range;

use shoal_core::TopicName;

/// Which scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N publisher/subscriber pairs, one topic each.
    Pairs,
    /// P publishers to S subscribers on one topic.
    Fanout,
    /// P publishers, each on its own topic, to one wildcard subscriber.
    Fanin,
    /// P publishers to a `$share` group of S subscribers.
    Shared,
    /// C idle connections opened at a target rate and held.
    Conn,
    /// One publisher at a fixed rate to one subscriber.
    Latency,
}

impl Scenario {
    /// The scenario's command name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pairs => "pairs",
            Self::Fanout => "fanout",
            Self::Fanin => "fanin",
            Self::Shared => "shared",
            Self::Conn => "conn",
            Self::Latency => "latency",
        }
    }
}

/// Sizes asked for on the command line (unset ones take the scenario's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sizes {
    /// `--pairs`.
    pub pairs: Option<u32>,
    /// `--publishers`.
    pub publishers: Option<u32>,
    /// `--subscribers`.
    pub subscribers: Option<u32>,
    /// `--connections`.
    pub connections: Option<u32>,
}

/// What one connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Publishes stamped messages on `topic` as publisher number `id`.
    Publisher {
        /// Publisher index, carried in every payload.
        id: u32,
        /// The one topic this publisher uses.
        topic: TopicName,
    },
    /// Subscribes to `filter` and checks messages from publishers in `expect`.
    Subscriber {
        /// Topic filter (possibly `$share/...`).
        filter: String,
        /// Publisher ids whose every message this subscriber should see (or, in a shared
        /// group, a share of).
        expect: Range<u32>,
    },
    /// Connects and stays connected.
    Idle,
}

/// One connection of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnSpec {
    /// Client identifier.
    pub client_id: String,
    /// What it does.
    pub role: Role,
}

/// Everything a run opens.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Which scenario.
    pub scenario: Scenario,
    /// Connections, subscribers first (they must be subscribed before anyone publishes).
    pub conns: Vec<ConnSpec>,
    /// Number of publishers (their ids are `0..publishers`).
    pub publishers: u32,
    /// Number of subscribers.
    pub subscribers: u32,
    /// How many subscribers should receive each published message.
    pub copies: u32,
    /// Subscribers share messages (a `$share` group): loss is judged over the group.
    pub shared_group: bool,
}

/// Why a plan cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A size of zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The topic prefix makes an invalid topic.
    #[error("topic prefix {0:?} does not make a valid topic name")]
    BadTopic(String),
}

fn topic(s: String) -> Result<TopicName, PlanError> {
    TopicName::try_from_str(&s).map_err(|_| PlanError::BadTopic(s))
}

fn at_least_one(v: u32, what: &'static str) -> Result<u32, PlanError> {
    if v == 0 {
        return Err(PlanError::Zero(what));
    }
    Ok(v)
}

impl Plan {
    /// Builds the plan for `scenario`.
    ///
    /// `prefix` starts every topic (unique per run, so runs against a long-lived broker do
    /// not see each other); `id_prefix` starts every client id; `group` names the
    /// shared-subscription group.
    ///
    /// # Errors
    /// A zero size, or a prefix that is not a valid topic.
    pub fn build(
        scenario: Scenario,
        sizes: Sizes,
        prefix: &str,
        id_prefix: &str,
        group: &str,
    ) -> Result<Self, PlanError> {
        let pub_id = |i: u32| format!("{id_prefix}p{i}");
        let sub_id = |i: u32| format!("{id_prefix}s{i}");
        let mut conns = Vec::new();
        let (publishers, subscribers, copies, shared_group);
        match scenario {
            Scenario::Pairs | Scenario::Latency => {
                let default = if scenario == Scenario::Pairs { 16 } else { 1 };
                let n = at_least_one(sizes.pairs.unwrap_or(default), "--pairs")?;
                for i in 0..n {
                    let t = format!("{prefix}/pair/{i}");
                    conns.push(ConnSpec {
                        client_id: sub_id(i),
                        role: Role::Subscriber { filter: t.clone(), expect: i..i + 1 },
                    });
                }
                for i in 0..n {
                    let t = topic(format!("{prefix}/pair/{i}"))?;
                    conns.push(ConnSpec {
                        client_id: pub_id(i),
                        role: Role::Publisher { id: i, topic: t },
                    });
                }
                (publishers, subscribers, copies, shared_group) = (n, n, 1, false);
            }
            Scenario::Fanout | Scenario::Fanin | Scenario::Shared => {
                let (p_default, s_default) = match scenario {
                    Scenario::Fanout => (1, 100),
                    Scenario::Fanin => (100, 1),
                    _ => (4, 4),
                };
                let p = at_least_one(sizes.publishers.unwrap_or(p_default), "--publishers")?;
                let s = at_least_one(sizes.subscribers.unwrap_or(s_default), "--subscribers")?;
                let filter = match scenario {
                    Scenario::Fanout => format!("{prefix}/fan"),
                    Scenario::Fanin => format!("{prefix}/in/+"),
                    _ => format!("$share/{group}/{prefix}/sh/+"),
                };
                for i in 0..s {
                    conns.push(ConnSpec {
                        client_id: sub_id(i),
                        role: Role::Subscriber { filter: filter.clone(), expect: 0..p },
                    });
                }
                for i in 0..p {
                    let t = match scenario {
                        Scenario::Fanout => format!("{prefix}/fan"),
                        Scenario::Fanin => format!("{prefix}/in/{i}"),
                        _ => format!("{prefix}/sh/{i}"),
                    };
                    conns.push(ConnSpec {
                        client_id: pub_id(i),
                        role: Role::Publisher { id: i, topic: topic(t)? },
                    });
                }
                let shared = scenario == Scenario::Shared;
                let per_message = if scenario == Scenario::Fanout { s } else { 1 };
                (publishers, subscribers, copies, shared_group) = (p, s, per_message, shared);
            }
            Scenario::Conn => {
                let c = at_least_one(sizes.connections.unwrap_or(1000), "--connections")?;
                for i in 0..c {
                    conns
                        .push(ConnSpec { client_id: format!("{id_prefix}c{i}"), role: Role::Idle });
                }
                (publishers, subscribers, copies, shared_group) = (0, 0, 0, false);
            }
        }
        Ok(Self { scenario, conns, publishers, subscribers, copies, shared_group })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(s: Scenario, sizes: Sizes) -> Plan {
        Plan::build(s, sizes, "lg/t", "c-", "g").unwrap()
    }

    #[test]
    fn pairs_subscribe_before_publishing_one_topic_each() {
        let p = plan(Scenario::Pairs, Sizes { pairs: Some(3), ..Default::default() });
        assert_eq!(p.conns.len(), 6);
        assert!(matches!(&p.conns[0].role, Role::Subscriber { filter, expect }
            if filter == "lg/t/pair/0" && *expect == (0..1)));
        assert!(matches!(&p.conns[5].role, Role::Publisher { id: 2, topic }
            if topic.as_str() == "lg/t/pair/2"));
        assert_eq!(p.copies, 1);
    }

    #[test]
    fn fanout_delivers_one_copy_per_subscriber() {
        let p = plan(Scenario::Fanout, Sizes::default());
        assert_eq!((p.publishers, p.subscribers, p.copies), (1, 100, 100));
    }

    #[test]
    fn fanin_uses_one_wildcard_subscriber() {
        let p = plan(Scenario::Fanin, Sizes::default());
        assert_eq!((p.publishers, p.subscribers), (100, 1));
        assert!(matches!(&p.conns[0].role, Role::Subscriber { filter, expect }
            if filter == "lg/t/in/+" && *expect == (0..100)));
    }

    #[test]
    fn shared_group_uses_share_filter() {
        let p = plan(Scenario::Shared, Sizes { subscribers: Some(2), ..Default::default() });
        assert!(p.shared_group);
        assert!(matches!(&p.conns[1].role, Role::Subscriber { filter, .. }
            if filter == "$share/g/lg/t/sh/+"));
    }

    #[test]
    fn zero_sizes_are_refused() {
        let e = Plan::build(
            Scenario::Conn,
            Sizes { connections: Some(0), ..Default::default() },
            "x",
            "c",
            "g",
        )
        .unwrap_err();
        assert_eq!(e, PlanError::Zero("--connections"));
    }
}
