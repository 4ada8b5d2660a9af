//! Cross-channel analytics over resolved customers, kept incrementally.
//!
//! Every stored customer has a [`Summary`] of what analytics needs from its
//! own timeline — its touches (inbound messages: time and channel), its
//! purchases, the source of its first touch — written in the same unit
//! that records the touch or the purchase. A *resolved* customer (one
//! person, whatever was merged into them) is the union of their summaries;
//! what they add to every report is [`contribution`] of that union: a flat
//! map of counters (`first_touch:whatsapp` = 1, `switch:widget>whatsapp` =
//! 2, `attr:linear:telegram` = 0.5, …).
//!
//! The report counters are the sum of every resolved customer's
//! contribution, kept in [`SHARDS`] counter keys: a unit that changes a
//! customer adds `new − old` of their contribution to the counter key of
//! their shard, as an increment the store applies without reading it (so
//! no two units ever conflict on a counter, and no unit needs a global
//! key). A merge moves both contributions into one; an undo splits them
//! back; erasure and a withdrawn `analytics` consent take a customer out.
//! A report over the whole store reads the [`SHARDS`] keys and never the
//! timeline. A report with a time range or a channel filter reads the
//! summaries instead (one key per customer, still never the timeline).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::channel::Referral;
use crate::db::{Ctx, Db, DbError};
use crate::identity::Customer;
use crate::store::{Backend, Txn};

/// Counter keys: a unit adds to the one of its customer's shard.
pub const SHARDS: u32 = 16;

/// The most touches a summary keeps: beyond, the oldest are folded into
/// the summary's [`Summary::earlier`] (the first touch and the channels'
/// order of first use are kept exactly; attribution looks back 30 days).
pub const MAX_TOUCHES: usize = 2_000;

/// How far back before a conversion touches share its credit.
pub const ATTRIBUTION_WINDOW_SECONDS: u64 = 30 * 86_400;

/// Time-decay attribution's half-life.
pub const HALF_LIFE_SECONDS: f64 = 7.0 * 86_400.0;

/// The attribution models, by their names in the API.
pub const MODELS: [&str; 5] = ["first", "last", "linear", "position", "time_decay"];

/// The consent attribute that, when set to anything but `granted`, takes a
/// customer out of analytics.
pub const CONSENT: &str = "consent.analytics";

/// One inbound message: when and on which channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touch {
    /// Unix seconds.
    pub at: u64,
    /// The configured channel name.
    pub channel: String,
}

/// What analytics keeps of one stored customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Touches, oldest first (at most [`MAX_TOUCHES`]).
    pub touches: Vec<Touch>,
    /// What was folded away when `touches` was full: the first touch and
    /// the channels in order of first use, and the switches counted
    /// between folded touches.
    #[serde(default)]
    pub earlier: Option<Folded>,
    /// Purchase times, Unix seconds, oldest first.
    pub purchases: Vec<u64>,
    /// The first touch's source, when its channel reported one (a
    /// click-to-WhatsApp ad).
    #[serde(default)]
    pub source: Option<Referral>,
    /// The customer refused analytics: they count nowhere.
    #[serde(default)]
    pub excluded: bool,
    /// Set when this customer was merged into another (mirrors the
    /// customer record, so a scan of summaries can resolve groups).
    #[serde(default)]
    pub merged_into: Option<String>,
}

/// Touches folded out of a long summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folded {
    /// The very first touch.
    pub first: Option<Touch>,
    /// Channels in order of first use among the folded touches.
    pub channels: Vec<String>,
    /// Switches between consecutive folded touches, `from>to` → count.
    pub switches: BTreeMap<String, u64>,
    /// The last folded touch (a switch to the first kept one counts).
    pub last: Option<Touch>,
}

impl Summary {
    /// Records a touch, in time order.
    pub fn touch(&mut self, at: u64, channel: &str, source: Option<&Referral>) {
        let pos = self.touches.partition_point(|t| t.at <= at);
        self.touches.insert(
            pos,
            Touch {
                at,
                channel: channel.to_string(),
            },
        );
        if self.source.is_none()
            && let Some(s) = source
            && self.first_touch().is_some_and(|f| f.at == at)
        {
            self.source = Some(s.clone());
        }
        if self.touches.len() > MAX_TOUCHES {
            let old = self.touches.remove(0);
            let f = self.earlier.get_or_insert_with(Folded::default);
            if f.first.is_none() {
                f.first = Some(old.clone());
            }
            if !f.channels.contains(&old.channel) {
                f.channels.push(old.channel.clone());
            }
            if let Some(prev) = &f.last
                && prev.channel != old.channel
            {
                *f.switches
                    .entry(format!("{}>{}", prev.channel, old.channel))
                    .or_default() += 1;
            }
            f.last = Some(old);
        }
    }

    /// Records a purchase.
    pub fn purchase(&mut self, at: u64) {
        let pos = self.purchases.partition_point(|p| *p <= at);
        self.purchases.insert(pos, at);
    }

    /// The first touch ever.
    pub fn first_touch(&self) -> Option<&Touch> {
        self.earlier
            .as_ref()
            .and_then(|f| f.first.as_ref())
            .or_else(|| self.touches.first())
    }

    /// One resolved customer: the union of their stored customers'
    /// summaries (touches and purchases merged in time order).
    pub fn union<'a>(parts: impl IntoIterator<Item = &'a Summary>) -> Summary {
        let mut out = Summary::default();
        let mut parts: Vec<&Summary> = parts.into_iter().collect();
        // The part with the earliest first touch gives the source.
        parts.sort_by_key(|p| p.first_touch().map(|t| t.at).unwrap_or(u64::MAX));
        for p in &parts {
            out.excluded |= p.excluded;
            if out.source.is_none() {
                out.source = p.source.clone();
            }
            out.purchases.extend(&p.purchases);
            out.touches.extend(p.touches.iter().cloned());
            if let Some(f) = &p.earlier {
                let e = out.earlier.get_or_insert_with(Folded::default);
                if e.first.is_none() {
                    e.first = f.first.clone();
                }
                for c in &f.channels {
                    if !e.channels.contains(c) {
                        e.channels.push(c.clone());
                    }
                }
                for (k, v) in &f.switches {
                    *e.switches.entry(k.clone()).or_default() += v;
                }
                if f.last.as_ref().map(|l| l.at) > e.last.as_ref().map(|l| l.at) {
                    e.last = f.last.clone();
                }
            }
        }
        out.purchases.sort_unstable();
        out.touches.sort_by_key(|t| t.at);
        out
    }
}

/// Counters, by name.
pub type Counters = BTreeMap<String, f64>;

/// `a − b`, without the zeros.
pub fn delta(new: &Counters, old: &Counters) -> Counters {
    let mut d = new.clone();
    for (k, v) in old {
        *d.entry(k.clone()).or_default() -= v;
    }
    d.retain(|_, v| v.abs() > 1e-12);
    d
}

/// What the time-range and channel filters keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filter<'a> {
    /// Unix seconds, inclusive.
    pub from: Option<u64>,
    /// Unix seconds, inclusive.
    pub to: Option<u64>,
    /// Only this channel's figures.
    pub channel: Option<&'a str>,
}

impl Filter<'_> {
    fn has_time(&self) -> bool {
        self.from.is_some() || self.to.is_some()
    }

    fn contains(&self, at: u64) -> bool {
        self.from.is_none_or(|f| at >= f) && self.to.is_none_or(|t| at <= t)
    }
}

/// What one resolved customer adds to the reports (all zero when they
/// refused analytics or never wrote). With a filter, only the touches and
/// conversions inside its range count.
pub fn contribution(s: &Summary, filter: &Filter<'_>) -> Counters {
    let mut c = Counters::new();
    if s.excluded {
        return c;
    }
    let add = |c: &mut Counters, k: String, v: f64| *c.entry(k).or_default() += v;
    let touches: Vec<&Touch> = s.touches.iter().filter(|t| filter.contains(t.at)).collect();
    let purchases: Vec<u64> = s
        .purchases
        .iter()
        .copied()
        .filter(|p| filter.contains(*p))
        .collect();
    // What was folded counts only without a time range (its times are
    // gone).
    let folded = s.earlier.as_ref().filter(|_| !filter.has_time());
    // The earliest of the folded first touch and the first kept one (a
    // merge can bring folded history that starts later than a part's).
    let first = match (
        folded.and_then(|f| f.first.as_ref()),
        touches.first().copied(),
    ) {
        (Some(f), Some(t)) if t.at < f.at => Some(t),
        (Some(f), _) => Some(f),
        (None, t) => t,
    };
    let Some(first) = first else {
        // Never wrote (in range): not a customer of these reports; their
        // purchases are conversions without a touch.
        for _ in &purchases {
            add(&mut c, "purchases".into(), 1.0);
            for m in MODELS {
                add(&mut c, format!("attr:{m}:none"), 1.0);
            }
        }
        return c;
    };
    add(&mut c, "customers".into(), 1.0);
    add(&mut c, format!("first_touch:{}", first.channel), 1.0);
    if let Some(src) = s.source.as_ref().filter(|_| !filter.has_time()) {
        add(&mut c, format!("source:{}", src.source_type), 1.0);
    }
    // Channels in order of first use: the journey's path.
    let mut path: Vec<&str> = folded
        .map(|f| f.channels.iter().map(String::as_str).collect())
        .unwrap_or_default();
    for t in &touches {
        if !path.contains(&t.channel.as_str()) {
            path.push(&t.channel);
        }
    }
    for ch in &path {
        add(&mut c, format!("active:{ch}"), 1.0);
    }
    if path.len() > 1 {
        add(&mut c, "multi_channel".into(), 1.0);
    }
    add(&mut c, "channels_used".into(), path.len() as f64);
    // Switches: consecutive touches on different channels.
    if let Some(f) = folded {
        for (k, v) in &f.switches {
            add(&mut c, format!("switch:{k}"), *v as f64);
        }
        if let (Some(last), Some(next)) = (&f.last, touches.first())
            && last.channel != next.channel
        {
            add(
                &mut c,
                format!("switch:{}>{}", last.channel, next.channel),
                1.0,
            );
        }
    }
    for w in touches.windows(2) {
        if w[0].channel != w[1].channel {
            add(
                &mut c,
                format!("switch:{}>{}", w[0].channel, w[1].channel),
                1.0,
            );
        }
    }
    // The first conversion: by the channel of the last touch before it.
    let path_key = path.join(">");
    add(&mut c, format!("path:{path_key}"), 1.0);
    if let Some(&p) = purchases.first() {
        let before = touches.iter().rev().find(|t| t.at <= p);
        let ch = before.map(|t| t.channel.as_str()).unwrap_or("none");
        add(&mut c, format!("converted:{ch}"), 1.0);
        add(&mut c, format!("pathconv:{path_key}"), 1.0);
        add(&mut c, "converted_customers".into(), 1.0);
    }
    // Attribution: every purchase's one credit over the touches in the 30
    // days before it.
    for &p in &purchases {
        add(&mut c, "purchases".into(), 1.0);
        // The touches the filter keeps: a range selects touches and
        // purchases alike.
        let window: Vec<&Touch> = touches
            .iter()
            .copied()
            .filter(|t| t.at <= p && p - t.at <= ATTRIBUTION_WINDOW_SECONDS)
            .collect();
        for m in MODELS {
            for (ch, credit) in credit(m, &window, p) {
                add(&mut c, format!("attr:{m}:{ch}"), credit);
            }
        }
    }
    if let Some(only) = filter.channel {
        c.retain(|k, _| key_mentions(k, only));
    }
    c
}

/// Whether a counter is about `channel` (or channel-free, like
/// `customers`).
fn key_mentions(key: &str, channel: &str) -> bool {
    match key.split_once(':') {
        None => true,
        Some(("path" | "pathconv" | "switch", rest)) => rest.split('>').any(|c| c == channel),
        Some(("attr", rest)) => rest.split_once(':').is_some_and(|(_, c)| c == channel),
        Some(("source", _)) => true,
        Some((_, c)) => c == channel,
    }
}

/// One conversion's credit under `model`, over the touches in its window
/// (oldest first), at conversion time `at`.
pub fn credit(model: &str, touches: &[&Touch], at: u64) -> Vec<(String, f64)> {
    let n = touches.len();
    if n == 0 {
        return vec![("none".into(), 1.0)];
    }
    let each = |w: Vec<f64>| -> Vec<(String, f64)> {
        touches
            .iter()
            .zip(w)
            .map(|(t, w)| (t.channel.clone(), w))
            .collect()
    };
    match model {
        "first" => vec![(touches[0].channel.clone(), 1.0)],
        "last" => vec![(touches[n - 1].channel.clone(), 1.0)],
        "linear" => each(vec![1.0 / n as f64; n]),
        "position" => each(match n {
            1 => vec![1.0],
            2 => vec![0.5, 0.5],
            _ => {
                let mut w = vec![0.2 / (n - 2) as f64; n];
                w[0] = 0.4;
                w[n - 1] = 0.4;
                w
            }
        }),
        _ => {
            let raw: Vec<f64> = touches
                .iter()
                .map(|t| 0.5f64.powf((at - t.at) as f64 / HALF_LIFE_SECONDS))
                .collect();
            let sum: f64 = raw.iter().sum();
            each(raw.into_iter().map(|r| r / sum).collect())
        }
    }
}

/// The `channels` report (INTERFACE §3.6) from summed counters.
pub fn channels_report(c: &Counters) -> serde_json::Value {
    let customers = get(c, "customers");
    let by = |prefix: &str| -> BTreeMap<String, f64> {
        c.iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .filter(|_| v.abs() > 1e-9)
                    .map(|ch| (ch.to_string(), *v))
            })
            .collect()
    };
    let active = by("active:");
    let conversions = by("converted:");
    let rate: BTreeMap<String, f64> = conversions
        .iter()
        .filter_map(|(ch, n)| {
            let a = active.get(ch).copied().unwrap_or(0.0);
            (a > 0.0).then(|| (ch.clone(), round(n / a)))
        })
        .collect();
    let multi = get(c, "multi_channel");
    serde_json::json!({
        "customers": count(customers),
        "first_touch": counts(&by("first_touch:")),
        "active": counts(&active),
        "conversions": counts(&conversions),
        "conversion_rate": rate,
        "multi_channel_customers": count(multi),
        "multi_channel_share": if customers > 0.0 { round(multi / customers) } else { 0.0 },
        "avg_channels_per_customer": if customers > 0.0 { round(get(c, "channels_used") / customers) } else { 0.0 },
        "first_touch_sources": counts(&by("source:")),
    })
}

/// The `switches` report.
pub fn switches_report(c: &Counters) -> serde_json::Value {
    let mut matrix: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let mut best: Option<(&str, &str, u64)> = None;
    for (k, v) in c {
        let Some((from, to)) = k.strip_prefix("switch:").and_then(|r| r.split_once('>')) else {
            continue;
        };
        let n = count(*v);
        if n == 0 {
            continue;
        }
        matrix
            .entry(from.to_string())
            .or_default()
            .insert(to.to_string(), n);
        if best.is_none_or(|(_, _, b)| n > b) {
            best = Some((from, to, n));
        }
    }
    serde_json::json!({
        "matrix": matrix,
        "most_common": best.map(|(f, t, n)| serde_json::json!({"from": f, "to": t, "count": n})),
    })
}

/// The `attribution` report for `model`.
pub fn attribution_report(c: &Counters, model: &str) -> serde_json::Value {
    let prefix = format!("attr:{model}:");
    let credit: BTreeMap<String, f64> = c
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&prefix)
                .filter(|_| v.abs() > 1e-9)
                .map(|ch| (ch.to_string(), round(*v)))
        })
        .collect();
    serde_json::json!({"model": model, "conversions": count(get(c, "purchases")), "credit": credit})
}

/// The `journeys` report: paths, most common first.
pub fn journeys_report(c: &Counters) -> serde_json::Value {
    let mut paths: Vec<(Vec<&str>, u64, u64)> = c
        .iter()
        .filter_map(|(k, v)| {
            let p = k.strip_prefix("path:")?;
            let n = count(*v);
            (n > 0).then(|| {
                let conv = count(get(c, &format!("pathconv:{p}")));
                (p.split('>').collect(), n, conv)
            })
        })
        .collect();
    paths.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let paths: Vec<serde_json::Value> = paths
        .into_iter()
        .map(|(p, n, conv)| serde_json::json!({"path": p, "customers": n, "conversions": conv}))
        .collect();
    serde_json::json!({"paths": paths})
}

/// The distinct channels a counter set names (for CSV columns).
pub fn channels_named(c: &Counters) -> BTreeSet<String> {
    c.keys()
        .filter_map(|k| {
            let (kind, rest) = k.split_once(':')?;
            matches!(kind, "active" | "first_touch" | "converted").then(|| rest.to_string())
        })
        .collect()
}

fn get(c: &Counters, k: &str) -> f64 {
    c.get(k).copied().unwrap_or(0.0)
}

/// A counter as a count (sums of ±1 stay integers; a float rounding
/// error never shows).
fn count(v: f64) -> u64 {
    v.round().max(0.0) as u64
}

fn counts(m: &BTreeMap<String, f64>) -> BTreeMap<String, u64> {
    m.iter()
        .map(|(k, v)| (k.clone(), count(*v)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Six decimals: enough for a share, stable for a test.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// The counter shard a customer's changes are added to (FNV-1a, stable
/// across processes).
pub fn shard_of(customer_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in customer_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % SHARDS
}

/// Whether a customer refused analytics (`consent.analytics` set to
/// anything but `granted`; unset counts as not refused).
pub fn refused(c: &Customer) -> bool {
    c.attributes
        .get(CONSENT)
        .is_some_and(|a| a.value != "granted")
}

/// One resolved customer's group for [`Ctx::analytics_regroup`]: the live
/// customer as it is now, and every stored customer id in the group.
pub(crate) struct Group<'a> {
    pub(crate) live: &'a Customer,
    pub(crate) members: Vec<String>,
}

impl Ctx<'_> {
    async fn summaries(
        &self,
        txn: &mut dyn Txn,
        ids: &[String],
    ) -> Result<BTreeMap<String, Summary>, DbError> {
        let keys: Vec<String> = ids.iter().map(|i| self.k().analytics(i)).collect();
        let values = txn.get_many(&keys).await?;
        let mut out = BTreeMap::new();
        for ((id, key), v) in ids.iter().zip(&keys).zip(values) {
            let s = match v {
                Some(b) => self.open(key, &b)?,
                None => Summary::default(),
            };
            out.insert(id.clone(), s);
        }
        Ok(out)
    }

    /// A group's contribution, with the live customer's own `excluded`.
    fn group_contribution(
        live: &str,
        members: &[String],
        all: &BTreeMap<String, Summary>,
    ) -> Counters {
        let parts: Vec<&Summary> = members.iter().filter_map(|m| all.get(m)).collect();
        let mut u = Summary::union(parts);
        u.excluded = all.get(live).is_some_and(|s| s.excluded);
        contribution(&u, &Filter::default())
    }

    /// Changes `c`'s own summary with `f` (a touch, a purchase) and moves
    /// the group's contribution by the difference, in the caller's unit.
    pub(crate) async fn analytics_update(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
        f: impl FnOnce(&mut Summary),
    ) -> Result<(), DbError> {
        let members: Vec<String> = if c.absorbed.is_empty() {
            vec![c.id.clone()]
        } else {
            self.group_of(txn, c)
                .await?
                .into_iter()
                .map(|m| m.id)
                .collect()
        };
        let mut all = self.summaries(txn, &members).await?;
        let old = Self::group_contribution(&c.id, &members, &all);
        let own = all.entry(c.id.clone()).or_default();
        f(own);
        own.excluded = refused(c);
        own.merged_into = None;
        let new = Self::group_contribution(&c.id, &members, &all);
        txn.add(
            &self.k().analytics_counters(shard_of(&c.id)),
            &delta(&new, &old),
        );
        let key = self.k().analytics(&c.id);
        txn.put(&key, self.seal(&key, &all[&c.id])?);
        Ok(())
    }

    /// Moves analytics from the groups `before` (live id, member ids: what
    /// was counted) to the groups `after` (a merge: two into one; an undo:
    /// one into two; a consent change: one into itself, refusal
    /// re-read; erasure: into none). Summaries keep their touches; only
    /// their group marks change.
    pub(crate) async fn analytics_regroup(
        &self,
        txn: &mut dyn Txn,
        before: &[(String, Vec<String>)],
        after: &[Group<'_>],
    ) -> Result<(), DbError> {
        let mut ids: Vec<String> = before
            .iter()
            .flat_map(|(_, m)| m.iter().cloned())
            .chain(after.iter().flat_map(|g| g.members.iter().cloned()))
            .collect();
        ids.sort();
        ids.dedup();
        let mut all = self.summaries(txn, &ids).await?;
        let mut old = Counters::new();
        for (live, members) in before {
            for (k, v) in Self::group_contribution(live, members, &all) {
                *old.entry(k).or_default() += v;
            }
        }
        for g in after {
            for m in &g.members {
                let s = all.entry(m.clone()).or_default();
                if *m == g.live.id {
                    s.excluded = refused(g.live);
                    s.merged_into = None;
                } else {
                    s.merged_into = Some(g.live.id.clone());
                }
            }
        }
        let mut new = Counters::new();
        for g in after {
            for (k, v) in Self::group_contribution(&g.live.id, &g.members, &all) {
                *new.entry(k).or_default() += v;
            }
        }
        let shard = before
            .first()
            .map(|(live, _)| shard_of(live))
            .unwrap_or_default();
        txn.add(&self.k().analytics_counters(shard), &delta(&new, &old));
        for g in after {
            for m in &g.members {
                let key = self.k().analytics(m);
                txn.put(&key, self.seal(&key, &all[m])?);
            }
        }
        Ok(())
    }

    /// Re-reads `c`'s refusal of analytics after its consent changed: its
    /// group counts, or stops counting, everywhere.
    pub(crate) async fn analytics_consent(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
    ) -> Result<(), DbError> {
        let members = self.group_ids(txn, c).await?;
        self.analytics_regroup(
            txn,
            &[(c.id.clone(), members.clone())],
            &[Group { live: c, members }],
        )
        .await
    }

    /// The ids of `c`'s group (it and everyone merged into it).
    pub(crate) async fn group_ids(
        &self,
        txn: &mut dyn Txn,
        c: &Customer,
    ) -> Result<Vec<String>, DbError> {
        Ok(self
            .group_of(txn, c)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect())
    }
}

impl<B: Backend> Db<B> {
    /// The report counters summed over every shard: one read of
    /// [`SHARDS`] keys, whatever the number of customers.
    pub async fn analytics_counters(&self) -> Result<Counters, DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let keys: Vec<String> =
                    (0..SHARDS).map(|s| ctx.k().analytics_counters(s)).collect();
                let mut sum = Counters::new();
                for (key, v) in keys.iter().zip(txn.get_many(&keys).await?) {
                    let Some(v) = v else { continue };
                    let shard: Counters = serde_json::from_slice(&v).map_err(|e| {
                        DbError::Store(crate::store::StoreError::Corrupt {
                            key: key.clone(),
                            reason: e.to_string(),
                        })
                    })?;
                    for (k, x) in shard {
                        *sum.entry(k).or_default() += x;
                    }
                }
                Ok(sum)
            })
        })
        .await
    }

    /// The report counters under a time range or channel filter: every
    /// summary read (one key per stored customer, never the timeline),
    /// grouped into resolved customers, and summed.
    pub async fn analytics_filtered(&self, filter: &Filter<'_>) -> Result<Counters, DbError> {
        let prefix = crate::store::Keys::new(self.prefix(), self.keyring()).analytics_prefix();
        let mut summaries: BTreeMap<String, Summary> = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = self
                .backend()
                .scan(&prefix, cursor.as_deref(), 1000)
                .await?;
            let owners: Vec<&str> = page
                .iter()
                .filter_map(|(k, _)| crate::db::owner_of_key(k))
                .collect();
            self.warm_customer_keys(&owners).await?;
            let page = &page;
            let opened: Vec<(String, Summary)> = self
                .read_unit(move |ctx, _| {
                    Box::pin(async move {
                        let mut out = Vec::with_capacity(page.len());
                        for (key, bytes) in page {
                            if let Some(id) = crate::db::owner_of_key(key) {
                                out.push((id.to_string(), ctx.open(key, bytes)?));
                            }
                        }
                        Ok(out)
                    })
                })
                .await?;
            summaries.extend(opened);
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // Resolve groups: each summary to its live customer.
        let mut groups: BTreeMap<String, Vec<&Summary>> = BTreeMap::new();
        for (id, s) in &summaries {
            let mut live = id.as_str();
            let mut hops = 0;
            while let Some(next) = summaries.get(live).and_then(|x| x.merged_into.as_deref()) {
                live = next;
                hops += 1;
                if hops > 64 {
                    break;
                }
            }
            groups.entry(live.to_string()).or_default().push(s);
        }
        let mut sum = Counters::new();
        for (live, parts) in groups {
            let mut u = Summary::union(parts.iter().copied());
            u.excluded = summaries.get(&live).is_some_and(|s| s.excluded);
            for (k, v) in contribution(&u, filter) {
                *sum.entry(k).or_default() += v;
            }
        }
        Ok(sum)
    }

    /// One customer's touchpoints (the `journeys?customer_id=` report):
    /// their group's touches from the summaries, oldest first.
    pub async fn analytics_touchpoints(
        &self,
        customer_id: &str,
    ) -> Result<(String, Summary), DbError> {
        self.read_unit(move |ctx, txn| {
            Box::pin(async move {
                let c = ctx.live_customer(txn, customer_id).await?;
                let members = ctx.group_ids(txn, &c).await?;
                let all = ctx.summaries(txn, &members).await?;
                let mut u = Summary::union(all.values());
                u.excluded = all.get(&c.id).is_some_and(|s| s.excluded);
                Ok((c.id.clone(), u))
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn summary(touches: &[(u64, &str)], purchases: &[u64]) -> Summary {
        let mut s = Summary::default();
        for (at, ch) in touches {
            s.touch(*at, ch, None);
        }
        for p in purchases {
            s.purchase(*p);
        }
        s
    }

    #[test]
    fn one_customer_on_three_channels_counts_once() {
        let s = summary(
            &[
                (10, "widget"),
                (20, "whatsapp"),
                (30, "whatsapp"),
                (40, "telegram"),
            ],
            &[50],
        );
        let c = contribution(&s, &Filter::default());
        let r = channels_report(&c);
        assert_eq!(r["customers"], 1);
        assert_eq!(r["first_touch"], serde_json::json!({"widget": 1}));
        assert_eq!(
            r["active"],
            serde_json::json!({"telegram": 1, "whatsapp": 1, "widget": 1})
        );
        assert_eq!(r["conversions"], serde_json::json!({"telegram": 1}));
        assert_eq!(r["multi_channel_share"], 1.0);
        assert_eq!(r["avg_channels_per_customer"], 3.0);
        assert_eq!(
            switches_report(&c)["matrix"],
            serde_json::json!({"widget": {"whatsapp": 1}, "whatsapp": {"telegram": 1}})
        );
        assert_eq!(
            journeys_report(&c)["paths"],
            serde_json::json!([{"path": ["widget", "whatsapp", "telegram"], "customers": 1, "conversions": 1}])
        );
    }

    #[test]
    fn the_five_models_split_one_credit_as_documented() {
        let t = |at: u64, ch: &str| Touch {
            at,
            channel: ch.into(),
        };
        let touches = [t(0, "a"), t(7 * DAY, "b"), t(14 * DAY, "c")];
        let refs: Vec<&Touch> = touches.iter().collect();
        let at = 14 * DAY;
        let sum = |m| -> f64 { credit(m, &refs, at).iter().map(|(_, c)| c).sum() };
        for m in MODELS {
            assert!((sum(m) - 1.0).abs() < 1e-9, "{m}");
        }
        assert_eq!(credit("first", &refs, at), [("a".to_string(), 1.0)]);
        assert_eq!(credit("last", &refs, at), [("c".to_string(), 1.0)]);
        let pos: Vec<f64> = credit("position", &refs, at).iter().map(|x| x.1).collect();
        assert_eq!(pos, [0.4, 0.2, 0.4]);
        // Time decay: weights 1/4, 1/2, 1 (7-day half-life), normalized.
        let td: Vec<f64> = credit("time_decay", &refs, at)
            .iter()
            .map(|x| x.1)
            .collect();
        for (got, want) in td.iter().zip([0.25 / 1.75, 0.5 / 1.75, 1.0 / 1.75]) {
            assert!((got - want).abs() < 1e-9, "{td:?}");
        }
        assert_eq!(
            credit("position", &refs[..2], at),
            [("a".to_string(), 0.5), ("b".to_string(), 0.5)]
        );
        assert_eq!(credit("linear", &[], at), [("none".to_string(), 1.0)]);
    }

    #[test]
    fn a_merge_is_the_union_and_undoing_it_gives_both_back() {
        let a = summary(&[(10, "widget")], &[]);
        let b = summary(&[(5, "whatsapp"), (20, "whatsapp")], &[30]);
        let f = Filter::default();
        let apart: Counters = {
            let mut x = contribution(&a, &f);
            for (k, v) in contribution(&b, &f) {
                *x.entry(k).or_default() += v;
            }
            x
        };
        let together = contribution(&Summary::union([&a, &b]), &f);
        assert_eq!(get(&apart, "customers"), 2.0);
        assert_eq!(get(&together, "customers"), 1.0);
        assert_eq!(get(&together, "first_touch:whatsapp"), 1.0);
        assert_eq!(get(&together, "switch:whatsapp>widget"), 1.0);
        assert_eq!(get(&together, "switch:widget>whatsapp"), 1.0);
        // Moving from one to the other and back is exact.
        let to = delta(&together, &apart);
        let back = delta(&apart, &together);
        let mut sum = apart.clone();
        for (k, v) in to.iter().chain(&back) {
            *sum.entry(k.clone()).or_default() += v;
        }
        sum.retain(|_, v| v.abs() > 1e-12);
        assert_eq!(sum, apart);
    }

    #[test]
    fn a_refusal_counts_nowhere_and_ranges_select_touches() {
        let mut s = summary(&[(10, "widget"), (100, "telegram")], &[150]);
        let r = Filter {
            from: Some(50),
            to: None,
            channel: None,
        };
        let c = contribution(&s, &r);
        assert_eq!(get(&c, "first_touch:telegram"), 1.0);
        assert_eq!(get(&c, "active:widget"), 0.0);
        s.excluded = true;
        assert!(contribution(&s, &Filter::default()).is_empty());
    }

    #[test]
    fn a_long_history_is_folded_without_losing_the_first_touch_or_the_path() {
        let mut s = Summary::default();
        s.touch(1, "widget", None);
        for i in 0..MAX_TOUCHES as u64 {
            s.touch(
                10 + i,
                if i % 2 == 0 { "whatsapp" } else { "telegram" },
                None,
            );
        }
        assert_eq!(s.touches.len(), MAX_TOUCHES);
        // Through a union, as every report reads it.
        let c = contribution(&Summary::union([&s]), &Filter::default());
        assert_eq!(get(&c, "first_touch:widget"), 1.0);
        assert_eq!(get(&c, "path:widget>whatsapp>telegram"), 1.0);
        // Every alternation is a switch: 1 (widget→whatsapp) + 1999.
        let switches: f64 = c
            .iter()
            .filter(|(k, _)| k.starts_with("switch:"))
            .map(|(_, v)| v)
            .sum();
        assert_eq!(switches, MAX_TOUCHES as f64);
    }

    /// The counters kept incrementally always equal what the summaries
    /// give when recomputed from scratch: after touches, a purchase, a
    /// merge, its undo, a refusal and an erasure.
    #[test]
    fn the_counters_always_equal_a_recount_from_the_summaries() {
        use crate::channel::ClaimKind;
        use crate::conversation::Entry;
        use crate::db::testing::{T0, claim, db, message, run, sender};
        use crate::identity::{How, Rules};

        let (db, _) = db(Rules::default());
        let same = |db: &crate::db::Db<crate::store::memory::Memory>| {
            let kept = run(db.analytics_counters()).unwrap();
            let recount = run(db.analytics_filtered(&Filter::default())).unwrap();
            let norm = |c: Counters| -> BTreeMap<String, i64> {
                c.into_iter()
                    .map(|(k, v)| (k, (v * 1e6).round() as i64))
                    .filter(|(_, v)| *v != 0)
                    .collect()
            };
            assert_eq!(norm(kept.clone()), norm(recount));
            kept
        };
        let wa = sender(
            "whatsapp",
            "1",
            vec![claim(ClaimKind::Phone, "+15551230001", true)],
            T0,
        );
        let tg = sender("telegram", "2", vec![], T0 + 60);
        let w = sender("widget", "u", vec![], T0 + 120);
        for (s, id) in [(&wa, "a1"), (&tg, "b1"), (&w, "c1")] {
            run(db.record_inbound(&message(s, id, "hi"))).unwrap();
        }
        let a = run(db.find_identity("whatsapp", "1")).unwrap().unwrap();
        let b = run(db.find_identity("telegram", "2")).unwrap().unwrap();
        let c0 = same(&db);
        assert_eq!(get(&c0, "customers"), 3.0);

        let purchase = Entry::event("purchase", serde_json::json!({}), T0 + 200);
        run(db.record_event(&b, &purchase, 0, (T0 + 200) * 1000)).unwrap();
        let c1 = same(&db);
        assert_eq!(get(&c1, "converted:telegram"), 1.0);

        let m = run(db.merge(&a, &b, How::AdminMerge, T0 + 300)).unwrap();
        let c2 = same(&db);
        assert_eq!(get(&c2, "customers"), 2.0);
        assert_eq!(get(&c2, "switch:whatsapp>telegram"), 1.0);
        assert_eq!(get(&c2, "first_touch:telegram"), 0.0);

        // A touch on the merged customer's channel lands on the survivor.
        let tg2 = sender("telegram", "2", vec![], T0 + 400);
        run(db.record_inbound(&message(&tg2, "b2", "again"))).unwrap();
        same(&db);

        run(db.undo(&m.merge_id, T0 + 500)).unwrap();
        let c3 = same(&db);
        assert_eq!(get(&c3, "customers"), 3.0);
        // The survivor keeps the touch it gained since the merge (as undo
        // keeps its timeline): its own whatsapp → telegram switch.
        assert_eq!(get(&c3, "switch:whatsapp>telegram"), 1.0);
        assert_eq!(get(&c3, "converted:telegram"), 1.0);

        let mut refuse = BTreeMap::new();
        refuse.insert(CONSENT.to_string(), "refused".to_string());
        run(db.set_attributes(&a, &refuse, "admin", T0 + 600)).unwrap();
        let c4 = same(&db);
        assert_eq!(get(&c4, "customers"), 2.0);
        assert_eq!(get(&c4, "first_touch:whatsapp"), 0.0);

        run(db.erase(&b)).unwrap();
        let c5 = same(&db);
        assert_eq!(get(&c5, "customers"), 1.0);
        assert_eq!(get(&c5, "purchases"), 0.0);
    }
}
